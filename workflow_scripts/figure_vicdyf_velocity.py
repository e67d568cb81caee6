"""Rule figure_vicdyf_velocity -> cellfate.plotting.dynamics.velocity_stream."""

from cellfate.plotting import dynamics
from cellfate.workflow import run

run(snakemake, lambda: dynamics.velocity_stream(snakemake.input[0], snakemake.output[0], snakemake.params.color_key))
