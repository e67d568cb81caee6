"""Rule figure_simulated_bifurcation -> cellfate.plotting.simulated.bifurcation_overview."""

from cellfate.plotting import simulated
from cellfate.workflow import run

run(snakemake, lambda: simulated.bifurcation_overview(snakemake.input.truth, snakemake.output[0]))
