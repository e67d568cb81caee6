"""Rule figure_vicdyf_fluctuation -> cellfate.plotting.dynamics.fluctuation_umap."""

from cellfate.plotting import dynamics
from cellfate.workflow import run

inp = snakemake.input
run(snakemake, lambda: dynamics.fluctuation_umap(inp.h5ad, inp.clusters, snakemake.output[0], snakemake.params.fate_key))
