"""Rule vicdyf_fit -> cellfate.dynamics.pipeline.fit (gene selection, training, outputs, save)."""

from cellfate.dynamics import pipeline
from cellfate.workflow import run

out = snakemake.output
run(snakemake, lambda: pipeline.fit(snakemake.input[0], out.model, out.h5ad, snakemake.params.cfg))
