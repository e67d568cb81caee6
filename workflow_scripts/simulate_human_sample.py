"""Rule simulate_human_sample -> cellfate.simulate.human.human_sample."""

from cellfate.simulate import human
from cellfate.workflow import run

run(snakemake, lambda: human.human_sample(snakemake.params.sim, snakemake.wildcards.sample, **snakemake.output))
