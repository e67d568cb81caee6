"""Rule figure_forward_decomposition -> cellfate.plotting.forward.forward_decomposition."""

from cellfate.plotting import forward
from cellfate.workflow import run

run(snakemake, lambda: forward.forward_decomposition(snakemake.input.cells, snakemake.output[0]))
