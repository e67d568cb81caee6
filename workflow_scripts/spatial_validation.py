"""Rule spatial_validation -> cellfate.spatial.pipeline.validate."""

from cellfate.spatial import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.validate(snakemake.input.cells, snakemake.input.p_mat, snakemake.input.types,
                                         snakemake.input.spots, snakemake.output[0], cfg=snakemake.params.cfg,
                                         environment_modes=snakemake.input.get("modes"),
                                         negative_modes=snakemake.input.get("negative_modes"),
                                         forward_table=snakemake.input.get("forward")))
