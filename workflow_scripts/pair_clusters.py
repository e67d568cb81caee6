"""Rule pair_clusters -> cellfate.spatial.pipeline.pair_clusters."""

from cellfate.spatial import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.pair_clusters(snakemake.input.cells, snakemake.input.edges, snakemake.output[0],
                                              cfg=snakemake.params.cfg))
