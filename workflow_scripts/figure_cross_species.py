"""Rule figure_cross_species -> cellfate.plotting.foundation.cross_species."""

from cellfate.plotting import foundation
from cellfate.workflow import run

run(
    snakemake,
    lambda: foundation.cross_species(
        snakemake.input.summary, snakemake.input.predictions, list(snakemake.input.orthologs), snakemake.output[0]
    ),
)
