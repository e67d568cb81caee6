"""Harmonisation: every sample ends with Ensembl mouse gene ids, integer counts and one label set.

Sources name genes differently (PanglaoDB ``SYMBOL_ENSMUSG...`` row names, Atlas Ensembl ids,
CELLxGENE Ensembl var index; some rows give symbols only). All are reduced to ENSMUSG ids: a
version suffix is dropped, a bare symbol is looked up in the mouse gene table, and counts of ids
that occur twice are summed, so no count is lost. What cannot be resolved is reported with its
counts rather than silently dropped. A sample whose genes are human (ENSG ids or human symbols) is refused by name:
mixing species would poison the gene medians of the whole corpus.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.counts import check_count_values
from cellfate.errors import CellfateError
from cellfate.genes import mouse_gene_table
from cellfate.synonyms import SynonymTable, resolve_symbols

MOUSE_ID = re.compile(r"(ENSMUSG\d{11})(?:\.\d+)?$")
HUMAN_ID = re.compile(r"(ENSG\d{11})(?:\.\d+)?$")
log = logging.getLogger(__name__)


#: Largest distance from the nearest integer still read as float noise in a raw count: some
#: writers store counts as float64 with errors near 1e-11 (celltypist's sample). Normalized or
#: log-transformed data sits far further from integers than this, so the two stay apart.
INTEGER_TOLERANCE = 1e-6


def _round_float_noise(matrix: sp.csr_matrix, path: str | Path, what: str) -> None:
    """Round stored values in place when every one lies within :data:`INTEGER_TOLERANCE` of an
    integer, saying so in the log; otherwise leave them for :func:`check_count_values` to refuse."""
    data = matrix.data
    if not data.size or data.dtype.kind != "f" or not np.isfinite(data).all():
        return
    off = np.abs(data - np.rint(data))
    if 0 < off.max() <= INTEGER_TOLERANCE:
        log.warning("%s: %d of %d entries of the %s lay within %g of an integer (float noise, largest %.1e) "
                    "and were rounded", path, int(np.count_nonzero(off)), data.size, what, INTEGER_TOLERANCE,
                    float(off.max()))
        matrix.data = np.rint(data)
        matrix.eliminate_zeros()


def check_counts(matrix: sp.spmatrix, path: str | Path, what: str = "count matrix") -> sp.csr_matrix:
    """Return the matrix as CSR int32 after checking it holds raw counts (non-negative integers).

    Values within :data:`INTEGER_TOLERANCE` of an integer are rounded (float noise, logged with
    how many entries moved); anything further is refused as not raw counts (normalised or log-transformed).
    """
    matrix = sp.csr_matrix(matrix, copy=True)
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise CellfateError(f"empty sample: {matrix.shape[0]} cells x {matrix.shape[1]} genes", path)
    _round_float_noise(matrix, path, what)
    check_count_values(matrix.data, f"the {what}", path)
    if matrix.data.size and matrix.data.max() > np.iinfo(np.int32).max:
        raise CellfateError(f"the {what}'s counts overflow int32", path)
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


@functools.cache
def _species_symbols() -> tuple[frozenset[str], frozenset[str]]:
    """Symbols only one species uses (exact case): mouse ``Cd3e``, ``mt-Co1``; human ``CD3E``, ``MT-CO1``."""
    from cellfate.genes import human_to_mouse_table

    mouse = set(mouse_gene_table()["symbol"].dropna())
    human = set(human_to_mouse_table()["human_symbol"].dropna())
    return frozenset(mouse - human), frozenset(human - mouse)


#: Ensembl gene id prefix of each species.
ID_PREFIX = {"mouse": "ENSMUSG", "human": "ENSG"}


def species_counts(ids: list[str | None], symbols: list[str | None]) -> dict[tuple[str, str], int]:
    """Genes that tell the species, by Ensembl id prefix or (for names without an id) by symbol:
    counts keyed by (species, "ids" or "symbols")."""
    mouse_only, human_only = _species_symbols()
    counts = {(species, kind): 0 for species in ("mouse", "human") for kind in ("ids", "symbols")}
    for gene_id, symbol in zip(ids, symbols):
        if gene_id:
            species = "mouse" if gene_id.startswith("ENSMUSG") else "human" if gene_id.startswith("ENSG") else None
        else:
            species = "mouse" if symbol in mouse_only else "human" if symbol in human_only else None
        if species:
            counts[species, "ids" if gene_id else "symbols"] += 1
    return counts


def check_species(ids: list[str | None], symbols: list[str | None], expected: str, path: str | Path | None) -> None:
    """Refuse a sample whose genes are mostly of the other species, naming it, in one line.

    Gene ids tell the species by prefix; symbols too, since the two species write them
    differently (``Actb`` / ``ACTB``). A human sample of symbols alone would otherwise keep the
    handful of names both species share and fail QC later with no word of species.
    """
    counts = species_counts(ids, symbols)
    other = "human" if expected == "mouse" else "mouse"

    def total(species: str) -> int:
        return counts[species, "ids"] + counts[species, "symbols"]

    if total(other) > total(expected):
        advice = ("list it under foundation.cross_species.samples to convert it through orthologs"
                  if expected == "mouse" else "give it to the mouse sources instead")
        raise CellfateError(
            f"looks like a {other} sample ({counts[other, 'ids']} {ID_PREFIX[other]} ids, "
            f"{counts[other, 'symbols']} {other} symbols; {total(expected)} {expected} genes): "
            f"this is a {expected} input; {advice}", path
        )


def _symbol_lookup() -> dict[str, str]:
    table = mouse_gene_table().reset_index().dropna(subset=["symbol"]).drop_duplicates("symbol")
    return dict(zip(table["symbol"], table["gene_id"]))


def harmonise_genes(
    counts: sp.csr_matrix, ids: list[str | None], symbols: list[str | None], path: str | Path,
    synonyms: SynonymTable | None = None,
) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame]:
    """Map genes to ENSMUSG ids and sum duplicates.

    Returns ``(counts, var, unresolved)``: the cells x ids matrix (ids sorted), ``var`` with
    ``symbol`` and ``in_gene_table``, and a table of the names that could not be resolved with
    their total counts and a ``note`` (an ambiguous old symbol names its candidates). With
    ``synonyms`` (MGI's table), old and alias symbols are renamed to current ones first.
    """
    check_species(ids, symbols, "mouse", path)
    lookup = _symbol_lookup()
    current, notes = resolve_symbols(symbols, synonyms, lookup.keys())
    resolved = [i if (i and i.startswith("ENSMUSG")) else lookup.get(s or "") for i, s in zip(ids, current)]
    keep = np.array([r is not None for r in resolved])
    gene_totals = np.asarray(counts.sum(axis=0)).ravel()
    names = [s or i for s, i, k in zip(symbols, ids, keep) if not k]
    unresolved = pd.DataFrame(
        {"name": names, "total_counts": gene_totals[~keep], "note": [notes.get(n or "", "") for n in names]}
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


def harmonise_cell_types(labels: pd.Series, path: str | Path | None = None, why: str = "") -> pd.Series:
    """Map source labels (PanglaoDB's 'T cells', Atlas authors' labels...) to one label set.

    Unknown labels are kept as they are (lower-cased) so nothing is lost; missing ones become
    ``unknown``. When every cell ends ``unknown`` a warning names the file and the likely cause
    (``why``): a label join that matched no barcode or a missing label column would otherwise
    pass in silence and leave the classifier nothing to learn from.
    """
    table = cell_type_synonyms()
    clean = labels.fillna("").astype(str).str.strip()
    mapped = clean.str.lower().map(table)
    out = mapped.fillna(clean.str.lower()).replace("", "unknown")
    if len(out) and out.eq("unknown").all():
        log.warning("%s: every one of the %d cells has cell type 'unknown'%s", path or "sample", len(out),
                    f" ({why})" if why else "")
    return out
