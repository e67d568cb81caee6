"""Rule figure_forward_shifts -> cellfate.plotting.forward.forward_shifts."""

from cellfate.plotting import forward
from cellfate.workflow import run

run(snakemake, lambda: forward.forward_shifts(snakemake.input.table, snakemake.output[0]))
