"""Gene names a user types -> Ensembl ids, with the model's own symbol map first.

A published checkpoint ships its authors' symbol -> Ensembl map (Mouse-Geneformer's
``..._GeneSymbol_to_EnsemblID.pkl``: ``tokenize.gene_mapping``), which the import copies into the
model folder as ``gene_mapping.json``. The checkpoint's vocabulary was built with that map, so it
wins over the project's gene table wherever the two disagree (renamed genes, symbols the table
lacks); the table still resolves every other symbol.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MAPPING_FILE = "gene_mapping.json"


def model_gene_mapping(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The model folder's symbol -> Ensembl map (empty when it has none, e.g. our own pretraining)."""
    path = Path(model_dir) / MAPPING_FILE
    if not path.is_file():
        return {}
    from cellfate.corpus.dictionary import load_gene_mapping

    return {symbol: gene.split(".")[0] for symbol, gene in load_gene_mapping(path).items()}


def symbol_lookup(gene_mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """Symbol -> Ensembl id: the project's mouse gene table, overridden by ``gene_mapping``."""
    from cellfate.genes import mouse_gene_table

    table = mouse_gene_table()
    return {s: g for g, s in table["symbol"].dropna().items()} | dict(gene_mapping or {})
