"""Rule vicdyf_crosscheck -> cellfate.dynamics.pipeline.crosscheck (VICDYF on independent simulators)."""

from cellfate.dynamics import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.crosscheck(snakemake.output[0], snakemake.params.cfg))
