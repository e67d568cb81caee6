"""Single Cell Expression Atlas: the ``quantification-raw`` zip and the experiment design TSV.

The zip holds a MatrixMarket genes x cells matrix with ``.mtx_rows`` (gene ids) and
``.mtx_cols`` (cell ids); the design TSV gives each cell ('Assay') its organism, organism part and
inferred cell type.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import anndata as ad
import pandas as pd
import scipy.io

from cellfate.errors import CellfateError
from cellfate.harmonise import check_counts, harmonise_cell_types, harmonise_genes, parse_gene_ids
from cellfate.readers import check_unique
from cellfate.synonyms import SynonymTable

CELL_TYPE_COLUMNS = (
    "Factor Value[inferred cell type - authors labels]",
    "Factor Value[inferred cell type - ontology labels]",
    "Sample Characteristic[cell type]",
)


def _member(names: list[str], suffix: str, path: str | Path) -> str:
    hits = [n for n in names if n.endswith(suffix)]
    if len(hits) != 1:
        raise CellfateError(f"expected one '*{suffix}' in the zip, found {len(hits)}", path)
    return hits[0]


def read_atlas_experiment(archive: str | Path, design: str | Path, *, accession: str, tissue: str | None = None,
                          synonyms: SynonymTable | None = None) -> tuple[ad.AnnData, pd.DataFrame]:
    """One experiment as AnnData (cells x ENSMUSG ids) and its unresolved-gene table."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            matrix = scipy.io.mmread(zf.open(_member(names, ".mtx", archive)))
            rows = zf.read(_member(names, ".mtx_rows", archive)).decode().splitlines()
            cols = zf.read(_member(names, ".mtx_cols", archive)).decode().splitlines()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        if isinstance(err, CellfateError):
            raise
        raise CellfateError(f"not a readable Expression Atlas zip: {err}", archive) from err
    genes = [r.split("\t")[0] for r in rows]
    check_unique(cols, "cell id (.mtx_cols)", archive)
    if matrix.shape != (len(genes), len(cols)):
        raise CellfateError(f"matrix is {matrix.shape} but rows/cols list {len(genes)} genes x {len(cols)} cells", archive)
    counts = check_counts(matrix.T, archive)
    ids, symbols = parse_gene_ids(genes)
    counts, var, unresolved = harmonise_genes(counts, ids, symbols, archive, synonyms)

    try:
        table = pd.read_csv(design, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise CellfateError(f"not a readable experiment design TSV: {err}", design) from err
    if "Assay" not in table:
        raise CellfateError("experiment design has no 'Assay' column", design)
    table = table.drop_duplicates("Assay").set_index("Assay").reindex(cols)
    organism = table.get("Sample Characteristic[organism]", pd.Series(dtype=str)).dropna().unique()
    if len(organism) and not all(o == "Mus musculus" for o in organism):
        raise CellfateError(f"experiment {accession} is {', '.join(organism)}, not Mus musculus: this is a mouse run", design)
    label_column = next((c for c in CELL_TYPE_COLUMNS if c in table), None)
    label = table[label_column].fillna("Unknown") if label_column else pd.Series("Unknown", index=cols)
    part = table.get("Sample Characteristic[organism part]")
    obs = pd.DataFrame(
        {
            "barcode": cols,
            "source": "expression_atlas",
            "sample": accession,
            "tissue": tissue if tissue else (part.fillna("unknown").to_numpy() if part is not None else "unknown"),
            "cell_type_source": label.to_numpy(),
            "cell_type": harmonise_cell_types(
                label, design, f"label column {label_column}" if label_column else
                f"no cell-type column ({', '.join(CELL_TYPE_COLUMNS)}) in the design, or no cell id matches its Assay column",
            ).to_numpy(),
            "is_primary_data": True,
        },
        index=pd.Index([f"{accession}:{c}" for c in cols], name="cell_id"),
    )
    return ad.AnnData(X=counts, obs=obs, var=var), unresolved
