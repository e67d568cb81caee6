"""Rule perturb_screen -> cellfate.foundation.screen.perturb."""

from cellfate.foundation import screen
from cellfate.workflow import run

run(
    snakemake,
    lambda: screen.perturb(
        snakemake.input.model,
        list(snakemake.input.shards),
        snakemake.input.dictionary,
        name=snakemake.wildcards.name,
        experiment=snakemake.params.experiment,
        settings=snakemake.params.settings,
        out_table=snakemake.output.table,
        out_gene_shifts=snakemake.output.gene_shifts,
    ),
)
