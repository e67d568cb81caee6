"""Spliced/unspliced counting: ``velocyto run`` on a 10x-style BAM, its loom read into AnnData.

- :mod:`~cellfate.velocity.guards`: checks of the BAM, GTF and barcodes before velocyto runs, one
  clear error per problem that velocyto itself would either crash on or, worse, silently miscount.
- :mod:`~cellfate.velocity.velocyto`: runs ``velocyto run`` into its own output directory.
- :mod:`~cellfate.velocity.loom`: the loom (velocyto's, or one the user brings), a layered h5ad or
  a STARsolo Velocyto folder as AnnData with integer ``spliced`` / ``unspliced`` layers, joined
  to the sample's QC'd cells.
"""
