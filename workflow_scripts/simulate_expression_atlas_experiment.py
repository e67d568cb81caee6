"""Rule simulate_expression_atlas_experiment -> cellfate.simulate.demo.expression_atlas_experiment."""

from cellfate.simulate import demo
from cellfate.workflow import run

run(snakemake, lambda: demo.expression_atlas_experiment(snakemake.params.row, snakemake.params.sim, **snakemake.output))
