"""Rule tokenize_median_values -> cellfate.corpus.medians.sample_bin_values."""

from cellfate.corpus import medians
from cellfate.workflow import run

run(
    snakemake,
    lambda: medians.sample_bin_values(
        snakemake.input.h5ad, snakemake.input.bins, snakemake.output[0], snakemake.params.chunk_size
    ),
)
