"""Rule tokenize_median_bins -> cellfate.corpus.medians.merge_sketches."""

from cellfate.corpus import medians
from cellfate.workflow import run

run(snakemake, lambda: medians.merge_sketches(snakemake.input.sketches, snakemake.output[0]))
