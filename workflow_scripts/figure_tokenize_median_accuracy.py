"""Rule figure_tokenize_median_accuracy -> cellfate.plotting.tokenize.median_accuracy."""

from cellfate.plotting import tokenize
from cellfate.workflow import run

run(snakemake, lambda: tokenize.median_accuracy(snakemake.input.table, snakemake.output[0]))
