"""Rule figure_embedding_umap -> cellfate.plotting.foundation.embedding_umap."""

from cellfate.plotting import foundation
from cellfate.workflow import run

run(snakemake, lambda: foundation.embedding_umap(snakemake.input[0], snakemake.output[0]))
