"""Rule figure_tokenize_lengths -> cellfate.plotting.tokenize.length_distributions."""

from cellfate.plotting import tokenize
from cellfate.workflow import run

run(
    snakemake,
    lambda: tokenize.length_distributions(
        snakemake.input.lengths, snakemake.params.labels, snakemake.output[0], snakemake.params.max_length
    ),
)
