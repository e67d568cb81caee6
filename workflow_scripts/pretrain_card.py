"""Rule pretrain_card -> cellfate.foundation.learning (unigram baseline, zero-shot kNN) and
cellfate.foundation.model_card (the self-contained model folder)."""

from cellfate.foundation.model_card import publish_pretrained
from cellfate.workflow import run

run(
    snakemake,
    lambda: publish_pretrained(
        snakemake.input.trained,
        snakemake.input.medians,
        list(snakemake.params.shards),
        snakemake.input.heldout,
        snakemake.output.model,
        snakemake.output.heldout,
        settings=dict(snakemake.params.settings),
        knn_k=snakemake.params.knn_k,
        knn_shards=list(snakemake.params.knn_shards),
    ),
)
