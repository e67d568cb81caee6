"""Rule tokenize_summary -> cellfate.corpus.summary.summarize."""

from cellfate.corpus import summary
from cellfate.workflow import run

run(snakemake, lambda: summary.summarize(snakemake.input.stats, snakemake.output[0]))
