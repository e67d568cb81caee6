"""Rule simulate_panglaodb_tables -> cellfate.simulate.demo.panglaodb_tables."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(snakemake, lambda: demo.panglaodb_tables(snakemake.params.rows, snakemake.params.sim, **snakemake.output))
