"""Rule figure_fluctuation_perturbation -> cellfate.plotting.foundation.fluctuation_perturbation."""

from cellfate.plotting import foundation
from cellfate.workflow import run

run(
    snakemake,
    lambda: foundation.fluctuation_perturbation(
        snakemake.input.table, snakemake.output[0], summary_tsv=snakemake.input.summary, fdr=snakemake.params.fdr
    ),
)
