"""Rule environment_dynamics -> cellfate.spatial.pipeline.environment."""

from cellfate.spatial import pipeline
from cellfate.workflow import run

run(snakemake, lambda: pipeline.environment(snakemake.input.cells, snakemake.input.p_mat, snakemake.input.ligand_target,
                                            snakemake.output.modes, snakemake.output.genes, snakemake.output.ligands,
                                            cfg=snakemake.params.cfg, spots_h5ad=snakemake.input.get("spots") or None))
