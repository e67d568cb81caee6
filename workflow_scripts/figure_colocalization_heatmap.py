"""Rule figure_colocalization_heatmap -> cellfate.plotting.spatial.colocalization_heatmap."""

from cellfate.plotting import spatial
from cellfate.workflow import run

run(snakemake, lambda: spatial.colocalization_heatmap(snakemake.input.types, snakemake.output[0]))
