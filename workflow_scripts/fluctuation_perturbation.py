"""Rule fluctuation_perturbation -> cellfate.foundation.fate_screen.run."""

from cellfate.foundation import fate_screen
from cellfate.workflow import run

run(
    snakemake,
    lambda: fate_screen.run(
        snakemake.input.h5ad,
        snakemake.input.drivers,
        snakemake.input.model,
        snakemake.input.medians,
        snakemake.output.table,
        snakemake.output.summary,
        spec=snakemake.params.spec,
        settings=snakemake.params.settings,
        version=snakemake.params.version,
        truth_h5ad=snakemake.input.truth[0] if snakemake.input.truth else None,
    ),
)
