"""Rule embed_cells -> cellfate.foundation.embed.write_embeddings."""

from cellfate.foundation import embed
from cellfate.workflow import run

run(
    snakemake,
    lambda: embed.write_embeddings(
        snakemake.input.model,
        list(snakemake.input.shards),
        snakemake.input.dictionary,
        snakemake.output[0],
        **snakemake.params.settings,
    ),
)
