"""Rule figure_classifier_confusion -> cellfate.plotting.foundation.classifier_confusion."""

from cellfate.plotting import foundation
from cellfate.workflow import run

run(
    snakemake,
    lambda: foundation.classifier_confusion(snakemake.input.predictions, snakemake.input.metrics, snakemake.output[0]),
)
