"""Rule classify_cells -> cellfate.foundation.classify.classify."""

from cellfate.foundation import classify
from cellfate.workflow import run

run(
    snakemake,
    lambda: classify.classify(
        snakemake.input.model,
        list(snakemake.input.shards),
        snakemake.input.dictionary,
        list(snakemake.input.qc),
        out_model=snakemake.output.model,
        out_metrics=snakemake.output.metrics,
        out_predictions=snakemake.output.predictions,
        settings=snakemake.params.settings,
    ),
)
