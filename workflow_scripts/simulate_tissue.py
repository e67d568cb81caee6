"""Rule simulate_tissue -> cellfate.simulate.demo.tissue."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(snakemake, lambda: demo.tissue(snakemake.params.sim, **snakemake.output))
