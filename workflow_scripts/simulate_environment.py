"""Rule simulate_environment -> cellfate.simulate.environment.write_environment."""

from cellfate.simulate.environment import write_environment
from cellfate.workflow import run

run(snakemake, lambda: write_environment(snakemake.params.sim, **snakemake.output))
