"""Rule cross_species -> cellfate.foundation.cross_species.cross_species."""

from cellfate.foundation import cross_species
from cellfate.workflow import run

run(
    snakemake,
    lambda: cross_species.cross_species(
        snakemake.params.samples,
        list(snakemake.input.shards),
        list(snakemake.input.orthologs),
        list(snakemake.input.qc),
        snakemake.input.model,
        snakemake.input.classifier,
        snakemake.input.dictionary,
        snakemake.input.reference,
        out_summary=snakemake.output.summary,
        out_predictions=snakemake.output.predictions,
        device=snakemake.params.device,
        knn_k=snakemake.params.knn_k,
    ),
)
