"""Rule qc_sample -> cellfate.corpus.intake.qc_sample."""

from cellfate.corpus import intake
from cellfate.workflow import run

run(snakemake, lambda: intake.qc_sample(snakemake.input[0], snakemake.params.thresholds, **snakemake.output))
