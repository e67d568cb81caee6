"""CELLxGENE end to end over HTTP: curation-API listing -> H5AD asset -> harmonised AnnData."""

from __future__ import annotations

import json
from pathlib import Path

from cellfate.simulate import source_formats
from cellfate.simulate.corpus import add_duplicates, corpus_model, simulate_sample
from cellfate.sources.cellxgene import read_cellxgene_dataset
from cellfate.sources.fetch import fetch_cellxgene_dataset, fetch_files
from http_fixture import FileServer

DATASET = "0f0f0f0f-1111-2222-3333-444444444444"


def test_listing_then_dataset_download_then_read(tmp_path: Path) -> None:
    srv_root = tmp_path / "srv"
    (srv_root / "curation" / "v1").mkdir(parents=True)
    model = corpus_model(["T cell", "B cell"], 300, seed=0)
    cells = simulate_sample(model, "X", ["T cell", "B cell"], 80, seed=0)
    donor = simulate_sample(model, "Y", ["T cell", "B cell"], 30, seed=0)
    cells = add_duplicates(cells, donor, 10, "Y", seed=0)
    source_formats.write_cellxgene_dataset(cells, DATASET, "spleen", srv_root / f"{DATASET}.h5ad")
    with FileServer(srv_root) as server:
        listing = [{"dataset_id": DATASET, "organism": [{"label": "Mus musculus"}],
                    "assets": [{"filetype": "H5AD", "url": f"{server.url}/{DATASET}.h5ad"}]}]
        (srv_root / "curation" / "v1" / "datasets").write_text(json.dumps(listing))
        server.faults[f"/{DATASET}.h5ad"] = [503, "drop:20000"]
        manifests = tmp_path / "manifests"
        fetch_files({"listing": f"{server.url}/curation/v1/datasets"}, {"listing": str(tmp_path / "datasets.json")},
                    manifest_dir=str(manifests), source="cellxgene", label="listing")
        out = tmp_path / "dl" / f"{DATASET}.h5ad"
        fetch_cellxgene_dataset(str(tmp_path / "datasets.json"), DATASET, str(out), manifest_dir=str(manifests), retries=3)
    assert out.read_bytes() == (srv_root / f"{DATASET}.h5ad").read_bytes()
    assert (manifests / "cellxgene" / f"{DATASET}.h5ad.json").exists()
    adata, _ = read_cellxgene_dataset(out, dataset_id=DATASET)
    assert (adata.X != cells.X).nnz == 0
    assert (~adata.obs["is_primary_data"]).sum() == 10
