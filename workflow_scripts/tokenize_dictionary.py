"""Rule tokenize_dictionary -> cellfate.corpus.dictionary.build."""

from cellfate.corpus import dictionary
from cellfate.workflow import run

run(snakemake, lambda: dictionary.build(snakemake.input.medians, snakemake.output[0], **snakemake.params.settings))
