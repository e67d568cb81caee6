"""Rule simulate_cellxgene_listing -> cellfate.simulate.demo.cellxgene_listing."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(snakemake, lambda: demo.cellxgene_listing(snakemake.params.rows, list(snakemake.input), snakemake.output[0]))
