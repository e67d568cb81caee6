"""Rule figure_vicdyf_validation -> cellfate.plotting.dynamics.validation."""

from cellfate.plotting import dynamics
from cellfate.workflow import run

inp = snakemake.input
run(snakemake, lambda: dynamics.validation(inp.h5ad, inp.truth, inp.validation, snakemake.output[0]))
