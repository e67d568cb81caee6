"""Rule figure_perturbation_top_genes -> cellfate.plotting.foundation.perturbation_top_genes."""

from cellfate.plotting import foundation
from cellfate.workflow import run

run(
    snakemake,
    lambda: foundation.perturbation_top_genes(
        list(snakemake.input.tables), snakemake.params.experiments, snakemake.output[0]
    ),
)
