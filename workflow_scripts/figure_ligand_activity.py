"""Rule figure_ligand_activity -> cellfate.plotting.spatial.ligand_activity."""

from cellfate.plotting import spatial
from cellfate.workflow import run

run(snakemake, lambda: spatial.ligand_activity(snakemake.input.ligands, snakemake.output[0]))
