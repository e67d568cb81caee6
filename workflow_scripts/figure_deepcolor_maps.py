"""Rule figure_deepcolor_maps -> cellfate.plotting.spatial.deepcolor_maps."""

from cellfate.plotting import spatial
from cellfate.workflow import run

run(snakemake, lambda: spatial.deepcolor_maps(snakemake.input.spots, snakemake.output[0]))
