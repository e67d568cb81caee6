"""Rule figure_vicdyf_crosscheck -> cellfate.plotting.dynamics.crosscheck."""

from cellfate.plotting import dynamics
from cellfate.workflow import run

run(snakemake, lambda: dynamics.crosscheck(snakemake.input[0], snakemake.output[0]))
