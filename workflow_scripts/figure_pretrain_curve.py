"""Rule figure_pretrain_curve -> cellfate.plotting.pretrain.training_curve."""

from cellfate.plotting import pretrain
from cellfate.workflow import run

run(snakemake, lambda: pretrain.training_curve(snakemake.input.history, snakemake.input.heldout, snakemake.output[0]))
