"""Harmonisation: every sample ends with Ensembl mouse gene ids, integer counts and one label set.

Sources name genes differently (PanglaoDB ``SYMBOL_ENSMUSG...`` row names, Atlas Ensembl ids,
CELLxGENE Ensembl var index; some rows give symbols only). All are reduced to ENSMUSG ids: a
version suffix is dropped, a bare symbol is looked up in the mouse gene table, and counts of ids
that occur twice are summed, so no count is lost. What cannot be resolved is reported with its
counts rather than silently dropped. A sample whose ids are human (ENSG) is refused by name:
mixing species would poison the gene medians of the whole corpus.
"""

from __future__ import annotations

import functools
import io
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.counts import check_count_values
from cellfate.errors import CellfateError
from cellfate.genes import mouse_gene_table

MOUSE_ID = re.compile(r"(ENSMUSG\d{11})(?:\.\d+)?$")
HUMAN_ID = re.compile(r"(ENSG\d{11})(?:\.\d+)?$")


def check_counts(matrix: sp.spmatrix, path: str | Path) -> sp.csr_matrix:
    """Return the matrix as CSR int32 after checking it holds raw counts (non-negative integers)."""
    matrix = sp.csr_matrix(matrix)
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise CellfateError(f"empty sample: {matrix.shape[0]} cells x {matrix.shape[1]} genes", path)
    data = matrix.data
    check_count_values(data, "the count matrix", path)
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise CellfateError("counts overflow int32", path)
    return sp.csr_matrix(matrix, dtype=np.int32)


def parse_gene_ids(names: list[str]) -> tuple[list[str | None], list[str | None]]:
    """Split source gene names into (Ensembl id or None, symbol or None).

    ``Xkr4_ENSMUSG00000051951``, ``Xkr4-ENSMUSG00000051951.2`` and ``ENSMUSG00000051951`` give
    the id; a name with no id is taken as a symbol.
    """
    ids: list[str | None] = []
    symbols: list[str | None] = []
    for name in names:
        match = MOUSE_ID.search(name) or HUMAN_ID.search(name)
        if match:
            ids.append(match.group(1))
            prefix = name[: match.start()].rstrip("_-")
            symbols.append(prefix or None)
        else:
            ids.append(None)
            symbols.append(name)
    return ids, symbols


def _symbol_lookup() -> dict[str, str]:
    table = mouse_gene_table().reset_index().dropna(subset=["symbol"]).drop_duplicates("symbol")
    return dict(zip(table["symbol"], table["gene_id"]))


def harmonise_genes(
    counts: sp.csr_matrix, ids: list[str | None], symbols: list[str | None], path: str | Path
) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame]:
    """Map genes to ENSMUSG ids and sum duplicates.

    Returns ``(counts, var, unresolved)``: the cells x ids matrix (ids sorted), ``var`` with
    ``symbol`` and ``in_gene_table``, and a table of the names that could not be resolved with
    their total counts.
    """
    n_human = sum(1 for i in ids if i and i.startswith("ENSG"))
    n_mouse = sum(1 for i in ids if i and i.startswith("ENSMUSG"))
    if n_human > n_mouse:
        raise CellfateError(
            f"looks like a human sample ({n_human} ENSG ids, {n_mouse} ENSMUSG ids): this is a mouse run; "
            "convert it through orthologs first", path
        )
    lookup = _symbol_lookup()
    resolved = [i if (i and i.startswith("ENSMUSG")) else lookup.get(s or "") for i, s in zip(ids, symbols)]
    keep = np.array([r is not None for r in resolved])
    gene_totals = np.asarray(counts.sum(axis=0)).ravel()
    unresolved = pd.DataFrame(
        {"name": [s or i for s, i, k in zip(symbols, ids, keep) if not k], "total_counts": gene_totals[~keep]}
    ).sort_values("total_counts", ascending=False)
    if not keep.any():
        raise CellfateError("no gene name resolves to a mouse Ensembl id", path)
    kept_ids = np.asarray([r for r in resolved if r is not None])
    unique_ids, column = np.unique(kept_ids, return_inverse=True)
    # Sum duplicate ids with one sparse product: counts[:, keep] @ (kept genes x unique ids) indicator.
    indicator = sp.csr_matrix((np.ones(len(column), dtype=np.int32), (np.arange(len(column)), column)),
                              shape=(len(column), len(unique_ids)))
    merged = sp.csr_matrix(counts[:, np.flatnonzero(keep)] @ indicator, dtype=np.int32)
    table = mouse_gene_table()
    in_table = pd.Index(unique_ids).isin(table.index)
    source_symbol = pd.Series([s for s, k in zip(symbols, keep) if k], index=kept_ids)
    source_symbol = source_symbol[~source_symbol.index.duplicated()]
    symbol = table["symbol"].reindex(unique_ids).fillna(source_symbol.reindex(unique_ids))
    var = pd.DataFrame({"symbol": symbol.to_numpy(), "in_gene_table": in_table}, index=pd.Index(unique_ids, name="gene_id"))
    return merged, var, unresolved


@functools.cache
def cell_type_synonyms() -> dict[str, str]:
    """Source label (lower case) -> harmonised Cell Ontology label, from the shipped table."""
    text = resources.files("cellfate").joinpath("data/cell_type_synonyms.tsv").read_text()
    frame = pd.read_csv(io.StringIO(text), sep="\t", comment="#")
    return {k.lower(): v for k, v in zip(frame["source_label"], frame["cell_type"])}


def harmonise_cell_types(labels: pd.Series) -> pd.Series:
    """Map source labels (PanglaoDB's 'T cells', Atlas authors' labels...) to one label set.

    Unknown labels are kept as they are (lower-cased) so nothing is lost; missing ones become
    ``unknown``.
    """
    table = cell_type_synonyms()
    clean = labels.fillna("").astype(str).str.strip()
    mapped = clean.str.lower().map(table)
    return mapped.fillna(clean.str.lower()).replace("", "unknown")
