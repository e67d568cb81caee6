"""Rule tokenize_median_accuracy -> cellfate.corpus.medians.median_accuracy."""

from cellfate.corpus import medians
from cellfate.workflow import run

run(
    snakemake,
    lambda: medians.median_accuracy(
        snakemake.input.h5ads, snakemake.input.medians, snakemake.output[0], snakemake.params.min_cells
    ),
)
