"""Rule tokenize_medians -> cellfate.corpus.medians.exact_from_values."""

from cellfate.corpus import medians
from cellfate.workflow import run

run(snakemake, lambda: medians.exact_from_values(snakemake.input.bins, snakemake.input.values, snakemake.output[0]))
