"""Rules deepcolor and deepcolor_environment -> cellfate.spatial.pipeline.deepcolor."""

from cellfate.spatial import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.deepcolor(snakemake.input.reference, snakemake.input.spots, **snakemake.output,
                                          cfg=snakemake.params.cfg))
