"""Rule colocalization -> cellfate.spatial.pipeline.colocalization."""

from cellfate.spatial import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.colocalization(snakemake.input.cells, snakemake.input.p_mat, snakemake.output.types,
                                               snakemake.output.edges, cfg=snakemake.params.cfg))
