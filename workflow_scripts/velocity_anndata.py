"""Rule velocity_anndata -> cellfate.velocity.loom.loom_to_h5ad (joined to the QC'd cells)."""

from cellfate.velocity.loom import loom_to_h5ad
from cellfate.workflow import run

inp = snakemake.input
run(snakemake, lambda: loom_to_h5ad(
    inp.velocyto, snakemake.wildcards.name, snakemake.output[0],
    cells_h5ad=inp.cells or None, barcode_key=snakemake.params.barcode_key,
))
