"""Rule import_pretrained -> cellfate.foundation.model_card.import_pretrained."""

from cellfate.foundation.model_card import import_pretrained
from cellfate.workflow import run

run(
    snakemake,
    lambda: import_pretrained(
        snakemake.input.source,
        snakemake.input.dictionary,
        snakemake.input.medians,
        snakemake.output[0],
        max_length=snakemake.params.max_length,
        gene_mapping=snakemake.params.gene_mapping,
    ),
)
