"""Rule figure_qc_metrics -> cellfate.plotting.qc.qc_metrics_figure."""

from cellfate.plotting import qc
from cellfate.workflow import run

run(snakemake, lambda: qc.qc_metrics_figure(snakemake.input, snakemake.output[0]))
