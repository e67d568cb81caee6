"""Rule simulate_cellxgene_dataset -> cellfate.simulate.demo.cellxgene_dataset."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(
    snakemake,
    lambda: demo.cellxgene_dataset(snakemake.params.row, snakemake.params.sim, snakemake.params.donor_row, **snakemake.output),
)
