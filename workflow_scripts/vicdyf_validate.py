"""Rule vicdyf_validate -> cellfate.dynamics.pipeline.validate (against the simulated truth)."""

from cellfate.dynamics import pipeline
from cellfate.workflow import run

inp = snakemake.input
run(snakemake, lambda: pipeline.validate(inp.h5ad, inp.truth, inp.genes, snakemake.output[0]))
