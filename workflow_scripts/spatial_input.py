"""Rule spatial_input -> cellfate.spatial.inputs.spatial_input (Space Ranger folders, h5ad sections -> one h5ad)."""

from cellfate.spatial.inputs import spatial_input
from cellfate.workflow import run

run(snakemake, lambda: spatial_input(snakemake.params.paths, snakemake.output[0]))
