"""Rule simulate_lineage_corpus -> cellfate.simulate.demo.lineage_corpus."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(snakemake, lambda: demo.lineage_corpus(snakemake.params.sim, snakemake.output[0]))
