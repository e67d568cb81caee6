"""Build paper-scale sample sheets from the sources' own listings of public mouse data.

Sample sheets fix the DAG, so they are made once, before the run, and committed with the
config: ``python -m cellfate.sources.select expression_atlas OUT.tsv`` reads the Atlas
experiment list (``/gxa/sc/json/experiments``), ``... cellxgene OUT.tsv`` the curation API's
``/datasets``; both keep Mus musculus only and write the columns config/schema.samples.yaml
expects. PanglaoDB's sheet comes from its ``metadata.txt`` the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

from cellfate.errors import CellfateError
from cellfate.io import write_table
from cellfate.sources.http import download
from cellfate.sources.panglaodb import read_metadata

LISTINGS = {
    "expression_atlas": "https://www.ebi.ac.uk/gxa/sc/json/experiments",
    "cellxgene": "https://api.cellxgene.cziscience.com/curation/v1/datasets",
}


def atlas_sheet(listing: dict) -> pd.DataFrame:
    """Mouse experiments of the Atlas list (``experiments``, or ``aaData`` in older answers)."""
    experiments = listing.get("experiments", listing.get("aaData"))
    if experiments is None:
        raise CellfateError("the Expression Atlas listing has neither 'experiments' nor 'aaData'")
    rows = [
        {"sample_id": e["experimentAccession"], "accession": e["experimentAccession"], "tissue": ""}
        for e in experiments
        if e.get("species") == "Mus musculus"
    ]
    return pd.DataFrame(rows, columns=["sample_id", "accession", "tissue"])


def cellxgene_sheet(listing: list[dict]) -> pd.DataFrame:
    """Mouse datasets of the curation-API listing that have an H5AD asset."""
    rows = []
    for entry in listing:
        organisms = {o.get("label") for o in entry.get("organism", [])}
        has_h5ad = any(a.get("filetype", "").upper() == "H5AD" for a in entry.get("assets", []))
        if organisms == {"Mus musculus"} and has_h5ad:
            rows.append({"sample_id": entry["dataset_id"], "dataset_id": entry["dataset_id"], "tissue": ""})
    return pd.DataFrame(rows, columns=["sample_id", "dataset_id", "tissue"])


def panglaodb_sheet(metadata: str | Path) -> pd.DataFrame:
    """Every Mus musculus sample of PanglaoDB's ``metadata.txt``."""
    meta = read_metadata(metadata)
    meta = meta[meta["species"] == "Mus musculus"]
    return pd.DataFrame(
        {"sample_id": meta["sra"] + "_" + meta["srs"], "sra": meta["sra"], "srs": meta["srs"],
         "tissue": meta["tissue"].str.replace("\t", " "), "protocol": meta["protocol"]}
    )


def select(source: str, out: str | Path, url: str | None = None) -> pd.DataFrame:
    """Fetch the source's listing (or read a local file / PanglaoDB metadata) and write its sheet."""
    with tempfile.TemporaryDirectory() as tmp:
        if source == "panglaodb":
            if not url:
                raise CellfateError("panglaodb needs --url: the path or URL of PanglaoDB's metadata.txt")
            local = download(url if "://" in url else Path(url).resolve().as_uri(), Path(tmp) / "metadata.txt")
            sheet = panglaodb_sheet(local)
        else:
            local = download(url or LISTINGS[source], Path(tmp) / "listing.json")
            try:
                listing = json.loads(local.read_text())
            except json.JSONDecodeError as err:
                raise CellfateError(f"the {source} listing is not JSON: {err}", url or LISTINGS[source]) from err
            sheet = atlas_sheet(listing) if source == "expression_atlas" else cellxgene_sheet(listing)
    if sheet.empty:
        raise CellfateError(f"no Mus musculus sample in the {source} listing")
    write_table(sheet, out)
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=["panglaodb", "expression_atlas", "cellxgene"])
    parser.add_argument("out", help="sample sheet to write (TSV)")
    parser.add_argument("--url", help="listing URL or file (default: the public endpoint)")
    args = parser.parse_args(argv)
    try:
        sheet = select(args.source, args.out, args.url)
    except CellfateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(sheet)} mouse samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
