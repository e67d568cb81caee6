"""Rule tokenize_sample -> cellfate.corpus.tokenizer.tokenize_sample."""

from cellfate.corpus import tokenizer
from cellfate.workflow import run

run(
    snakemake,
    lambda: tokenizer.tokenize_sample(
        snakemake.input.h5ad,
        snakemake.input.dictionary,
        snakemake.input.medians,
        snakemake.output.shards,
        snakemake.output.lengths,
        snakemake.output.stats,
        threads=snakemake.threads,
        **snakemake.params.settings,
    ),
)
