"""Rule simulate_panglaodb_sample -> cellfate.simulate.demo.panglaodb_sample."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(snakemake, lambda: demo.panglaodb_sample(snakemake.params.row, snakemake.params.sim, **snakemake.output))
