"""Rule figure_fluctuation_perturbation -> cellfate.plotting.foundation.fluctuation_perturbation."""

from cellfate.plotting import foundation
from cellfate.workflow import run

run(
    snakemake,
    lambda: foundation.fluctuation_perturbation(snakemake.input[0], snakemake.output[0], fdr=snakemake.params.fdr),
)
