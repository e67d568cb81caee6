"""Rule figure_simulated_corpus -> cellfate.plotting.simulated.corpus_composition."""

from cellfate.plotting import simulated
from cellfate.workflow import run

run(snakemake, lambda: simulated.corpus_composition(snakemake.input.truth, snakemake.output[0]))
