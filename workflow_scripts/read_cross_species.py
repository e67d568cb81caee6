"""Rule read_cross_species -> cellfate.foundation.orthologs.convert_sample."""

from cellfate.foundation import orthologs
from cellfate.workflow import run

run(
    snakemake,
    lambda: orthologs.convert_sample(
        snakemake.input.h5ad,
        **snakemake.params.sample,
        out_h5ad=snakemake.output.h5ad,
        out_genes=snakemake.output.genes,
        out_orthologs=snakemake.output.orthologs,
        synonyms=snakemake.input.synonyms or None,
    ),
)
