"""Rule tokenize_sketch -> cellfate.corpus.medians.sketch_sample."""

from cellfate.corpus import medians
from cellfate.workflow import run

run(snakemake, lambda: medians.sketch_sample(snakemake.input.h5ad, snakemake.output[0], snakemake.params.chunk_size))
