"""Rule read_cellxgene -> cellfate.corpus.intake.read_cellxgene."""

from cellfate.corpus import intake
from cellfate.workflow import run

run(snakemake, lambda: intake.read_cellxgene(snakemake.params.row, **snakemake.input, **snakemake.output))
