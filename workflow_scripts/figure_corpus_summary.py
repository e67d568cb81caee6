"""Rule figure_corpus_summary -> cellfate.plotting.qc.corpus_summary_figure."""

from cellfate.plotting import qc
from cellfate.workflow import run

run(snakemake, lambda: qc.corpus_summary_figure(snakemake.input.composition, snakemake.input.summary, snakemake.output[0]))
