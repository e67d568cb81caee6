"""Rule figure_vicdyf_fluctuation_genes -> cellfate.plotting.dynamics.fluctuation_genes."""

from cellfate.plotting import dynamics
from cellfate.workflow import run

run(snakemake, lambda: dynamics.fluctuation_genes(snakemake.input[0], snakemake.output[0]))
