"""Rule figure_spatial_validation -> cellfate.plotting.spatial.spatial_validation."""

from cellfate.plotting import spatial
from cellfate.workflow import run

run(snakemake, lambda: spatial.spatial_validation(snakemake.input.mapped, snakemake.input.truth, snakemake.input.types,
                                                  snakemake.input.validation, snakemake.output[0]))
