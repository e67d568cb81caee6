"""Paper sample sheets are selected from the sources' listings, mouse only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from cellfate.sources.select import main
from http_fixture import FileServer

DATA = Path(__file__).parent / "data" / "panglaodb"


def test_atlas_and_cellxgene_listings_over_http(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    (root / "experiments.json").write_text(json.dumps({"experiments": [
        {"experimentAccession": "E-MTAB-1", "species": "Mus musculus"},
        {"experimentAccession": "E-MTAB-2", "species": "Homo sapiens"}]}))
    (root / "datasets.json").write_text(json.dumps([
        {"dataset_id": "m1", "organism": [{"label": "Mus musculus"}], "assets": [{"filetype": "H5AD", "url": "u"}]},
        {"dataset_id": "h1", "organism": [{"label": "Homo sapiens"}], "assets": [{"filetype": "H5AD", "url": "u"}]},
        {"dataset_id": "m2", "organism": [{"label": "Mus musculus"}], "assets": [{"filetype": "RDS", "url": "u"}]}]))
    with FileServer(root) as server:
        server.faults["/experiments.json"] = [503]  # the Atlas often times out: retried
        assert main(["expression_atlas", str(tmp_path / "a.tsv"), "--url", f"{server.url}/experiments.json"]) == 0
        assert main(["cellxgene", str(tmp_path / "c.tsv"), "--url", f"{server.url}/datasets.json"]) == 0
    assert list(pd.read_csv(tmp_path / "a.tsv", sep="\t")["accession"]) == ["E-MTAB-1"]
    assert list(pd.read_csv(tmp_path / "c.tsv", sep="\t")["dataset_id"]) == ["m1"]


def test_panglaodb_sheet_from_real_metadata(tmp_path: Path) -> None:
    assert main(["panglaodb", str(tmp_path / "p.tsv"), "--url", str(DATA / "metadata.txt")]) == 0
    sheet = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    assert len(sheet) == sum(1 for line in (DATA / "metadata.txt").read_text().splitlines() if '"Mus musculus"' in line)
    assert (sheet["sample_id"] == sheet["sra"] + "_" + sheet["srs"]).all()


def test_listing_without_mouse_data_is_a_clear_error(tmp_path: Path) -> None:
    listing = tmp_path / "l.json"
    listing.write_text(json.dumps({"experiments": [{"experimentAccession": "E-1", "species": "Homo sapiens"}]}))
    result = subprocess.run([sys.executable, "-m", "cellfate.sources.select", "expression_atlas", str(tmp_path / "o.tsv"),
                             "--url", listing.as_uri()], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip() == "error: no Mus musculus sample in the expression_atlas listing"
    assert not (tmp_path / "o.tsv").exists()
