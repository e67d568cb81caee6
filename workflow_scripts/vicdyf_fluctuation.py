"""Rule vicdyf_fluctuation -> cellfate.dynamics.pipeline.fluctuation (top cells, clusters, fate genes)."""

from cellfate.dynamics import pipeline
from cellfate.workflow import run

inp, out = snakemake.input, snakemake.output
run(snakemake, lambda: pipeline.fluctuation(inp.h5ad, inp.model, out.genes, out.clusters, snakemake.params.cfg))
