"""Rule corpus_summary -> cellfate.corpus.intake.corpus_summary."""

from cellfate.corpus import intake
from cellfate.workflow import run

run(snakemake, lambda: intake.corpus_summary(snakemake.input.h5ads, snakemake.input.tables, **snakemake.output))
