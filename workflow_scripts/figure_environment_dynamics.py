"""Rule figure_environment_dynamics -> cellfate.plotting.spatial.environment_dynamics."""

from cellfate.plotting import spatial
from cellfate.workflow import run

run(snakemake, lambda: spatial.environment_dynamics(snakemake.input.modes, snakemake.input.genes,
                                                    snakemake.input.ligands, snakemake.output[0]))
