"""Rule figure_pair_clusters_umap -> cellfate.plotting.spatial.pair_clusters_umap."""

from cellfate.plotting import spatial
from cellfate.workflow import run

run(snakemake, lambda: spatial.pair_clusters_umap(snakemake.input.pairs, snakemake.output[0]))
