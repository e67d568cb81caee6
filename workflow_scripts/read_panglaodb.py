"""Rule read_panglaodb -> cellfate.corpus.intake.read_panglaodb."""

from cellfate.corpus import intake
from cellfate.workflow import run

run(snakemake, lambda: intake.read_panglaodb(snakemake.params.row, **snakemake.input, **snakemake.output))
