"""Rule ligand_activity -> cellfate.spatial.pipeline.ligands."""

from cellfate.spatial import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.ligands(snakemake.input.cells, snakemake.input.model, snakemake.input.edges,
                                        snakemake.input.ligand_target, snakemake.output[0], cfg=snakemake.params.cfg))
