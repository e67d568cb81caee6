"""Rule figure_simulated_tissue -> cellfate.plotting.simulated.tissue_overview."""

from cellfate.plotting import simulated
from cellfate.workflow import run

run(snakemake, lambda: simulated.tissue_overview(snakemake.input.spots, snakemake.output[0]))
