"""Rule velocity_anndata -> cellfate.velocity.loom (velocyto's loom, a given loom or a layered h5ad, on the QC'd cells)."""

from cellfate.velocity.loom import counts_to_h5ad, loom_to_h5ad
from cellfate.workflow import run

inp, params = snakemake.input, snakemake.params
if params.kind == "velocyto":
    run(snakemake, lambda: loom_to_h5ad(
        inp.counts, snakemake.wildcards.name, snakemake.output[0],
        cells_h5ad=inp.cells or None, barcode_key=params.barcode_key,
    ))
else:
    run(snakemake, lambda: counts_to_h5ad(
        inp.counts, params.kind, snakemake.wildcards.name, snakemake.output[0],
        cells_h5ad=inp.cells or None, barcode_key=params.barcode_key,
    ))
