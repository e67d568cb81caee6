"""Rule read_expression_atlas -> cellfate.corpus.intake.read_expression_atlas."""

from cellfate.corpus import intake
from cellfate.workflow import run

run(snakemake, lambda: intake.read_expression_atlas(snakemake.params.row, **snakemake.input, **snakemake.output))
