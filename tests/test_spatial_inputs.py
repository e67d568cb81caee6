"""Spatial inputs as users have them: a Space Ranger outs/ folder (10x HDF5 matrix, positions,
scale factors, images) and single-cell-resolution h5ad sections, put side by side.

The folder is written here in Space Ranger's layout with real counts (the scVelo pancreas slice,
50 cells standing in for 50 spots, genes by their real Ensembl ids) on a Visium-like grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from cellfate.errors import CellfateError
from cellfate.genes import mouse_gene_table
from cellfate.spatial.inputs import read_section, side_by_side, spatial_input
from conftest import run_snakemake

PANCREAS = Path(__file__).parent / "data" / "scvelo" / "pancreas_50obs_top2000.h5ad"


def pancreas_counts() -> ad.AnnData:
    """The slice's spliced + unspliced counts on the genes whose symbol has one Ensembl id."""
    data = ad.read_h5ad(PANCREAS)
    table = mouse_gene_table().reset_index().dropna(subset=["symbol"])
    table = table[~table["symbol"].duplicated(keep=False)].set_index("symbol")["gene_id"]
    keep = data.var_names[data.var_names.isin(table.index)]
    out = ad.AnnData(sp.csr_matrix(data[:, keep].layers["spliced"] + data[:, keep].layers["unspliced"]).astype(np.int32),
                     obs=pd.DataFrame(index=[f"{b}-1" for b in data.obs_names]), var=pd.DataFrame(index=keep))
    out.var["gene_ids"] = table.loc[keep].to_numpy()
    return out


def write_spaceranger(counts: ad.AnnData, outs: Path, positions_list: bool = False) -> Path:
    """Space Ranger's outs/: 10x HDF5 (features x barcodes CSC), positions (+ off-tissue spots), scale factors, images."""
    import matplotlib.pyplot as plt

    (outs / "spatial").mkdir(parents=True)
    csc = sp.csc_matrix(counts.X.T)  # features x barcodes
    n = counts.n_vars
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs.update({"filetype": "matrix", "version": 2, "library_ids": np.array([b"section_a"]),
                        "chemistry_description": "Spatial 3' v1", "software_version": "spaceranger-2.0.0"})
        m = f.create_group("matrix")
        m["barcodes"] = np.array(counts.obs_names, dtype="S")
        m["data"], m["indices"], m["indptr"] = csc.data.astype(np.int32), csc.indices.astype(np.int64), csc.indptr
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["_all_tag_keys"] = np.array([b"genome"])
        feats["feature_type"] = np.array([b"Gene Expression"] * n)
        feats["genome"] = np.array([b"mm10"] * n)
        feats["id"] = np.array(counts.var["gene_ids"], dtype="S")
        feats["name"] = np.array(counts.var_names, dtype="S")
    rows = [(b, 1, i // 10, 2 * (i % 10) + (i // 10) % 2, 1000 + 140 * (i // 10), 1000 + 80 * (i % 10))
            for i, b in enumerate(counts.obs_names)]
    rows += [(f"TTTTTTTTTTTTTT{i:02d}-1", 0, 9, i, 3000, 3000 + 80 * i) for i in range(3)]  # spots off the tissue
    table = pd.DataFrame(rows, columns=["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres",
                                        "pxl_col_in_fullres"])
    if positions_list:  # Space Ranger 1.x: no header
        table.to_csv(outs / "spatial" / "tissue_positions_list.csv", index=False, header=False)
    else:
        table.to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(
        {"spot_diameter_fullres": 89.4, "tissue_hires_scalef": 0.17, "fiducial_diameter_fullres": 144.5,
         "tissue_lowres_scalef": 0.05}))
    for name, size in (("hires", 40), ("lowres", 12)):
        plt.imsave(outs / "spatial" / f"tissue_{name}_image.png", np.full((size, size, 3), 0.8))
    return outs


@pytest.fixture(scope="module")
def counts() -> ad.AnnData:
    return pancreas_counts()


@pytest.mark.parametrize("positions_list", [False, True])
def test_space_ranger_folder_is_read(counts, tmp_path, positions_list) -> None:
    write_spaceranger(counts, tmp_path / "run" / "outs", positions_list)
    spots = read_section(tmp_path / "run", "section_a")  # the run folder or its outs/ both work
    assert spots.n_obs == 50 and list(spots.obs_names) == list(counts.obs_names)  # off-tissue spots left out
    assert list(spots.var_names) == list(counts.var["gene_ids"]) and spots.var_names[0].startswith("ENSMUSG")
    assert "Pdx1" in set(spots.var["symbol"])
    assert spots.X.dtype == np.int32 and (spots.X != counts.X).nnz == 0
    # obsm['spatial'] is (x, y) = (pxl_col, pxl_row), as scanpy and squidpy plot it
    np.testing.assert_array_equal(spots.obsm["spatial"][1], [1080, 1000])
    np.testing.assert_array_equal(spots.obsm["spatial"][10], [1000, 1140])


def test_missing_positions_file_is_one_line(counts, tmp_path) -> None:
    outs = write_spaceranger(counts, tmp_path / "outs")
    (outs / "spatial" / "tissue_positions.csv").unlink()
    with pytest.raises(CellfateError, match="has no spatial/tissue_positions.csv or spatial/tissue_positions_list.csv"):
        read_section(outs, "a")
    with pytest.raises(CellfateError, match="not a Space Ranger outs/ folder"):
        read_section(tmp_path / "outs" / "spatial", "a")


def _cell_section(counts: ad.AnnData, seed: int) -> ad.AnnData:
    """Single-cell-resolution section: cells with coordinates, types and spliced/unspliced layers."""
    rng = np.random.default_rng(seed)
    cells = ad.AnnData(counts.X.copy(), obs=pd.DataFrame({"cell_type": rng.choice(["alpha", "beta"], counts.n_obs)},
                                                         index=counts.obs_names),
                       var=pd.DataFrame(index=counts.var["gene_ids"].to_numpy()),
                       layers={"spliced": counts.X.copy(), "unspliced": counts.X.copy()})
    cells.obsm["spatial"] = rng.uniform(0, 500, size=(counts.n_obs, 2))
    return cells


def test_sections_side_by_side_never_share_neighbours(counts, tmp_path) -> None:
    from sklearn.neighbors import NearestNeighbors

    write_spaceranger(counts, tmp_path / "outs")
    _cell_section(counts, 0).write_h5ad(tmp_path / "cells.h5ad")
    spatial_input({"visium": tmp_path / "outs", "merfish": tmp_path / "cells.h5ad"}, tmp_path / "joined.h5ad")
    joined = ad.read_h5ad(tmp_path / "joined.h5ad")
    assert joined.n_obs == 100 and list(joined.obs["section"].unique()) == ["visium", "merfish"]
    assert joined.obs_names[0] == f"visium:{counts.obs_names[0]}" and joined.var_names[0].startswith("ENSMUSG")
    _, idx = NearestNeighbors(n_neighbors=16).fit(joined.obsm["spatial"]).kneighbors(joined.obsm["spatial"])
    section = joined.obs["section"].to_numpy()
    assert (section[idx] == section[:, None]).all()  # the 15 nearest of every spot/cell are in its own section
    np.testing.assert_array_equal(joined[joined.obs["section"] == "merfish"].obsm["spatial_section"],
                                  _cell_section(counts, 0).obsm["spatial"])


def test_non_integer_or_no_coordinates_are_refused(counts, tmp_path) -> None:
    cells = _cell_section(counts, 1)
    cells.X = np.log1p(cells.X.toarray())
    cells.write_h5ad(tmp_path / "log.h5ad")
    with pytest.raises(CellfateError, match="not normalised or log-transformed"):
        read_section(tmp_path / "log.h5ad", "a")
    del cells.obsm["spatial"]
    cells.write_h5ad(tmp_path / "noxy.h5ad")
    with pytest.raises(CellfateError, match=r"no obsm\['spatial'\]"):
        read_section(tmp_path / "noxy.h5ad", "a")


def test_workflow_takes_folders_and_sections(tmp_path) -> None:
    (tmp_path / "outs_a").mkdir()
    for name in ("ref.h5ad", "b.h5ad"):
        (tmp_path / name).write_text("")
    urls = ("panglaodb_counts", "panglaodb_clusters", "panglaodb_annotations", "expression_atlas_counts",
            "expression_atlas_design", "cellxgene_listing")
    config = {"simulate": None, "download": {"urls": {k: "https://example.org/x" for k in urls}},
              "spatial": {"reference": str(tmp_path / "ref.h5ad"),
                          "spots": {"a": str(tmp_path / "outs_a"), "b": str(tmp_path / "b.h5ad")}}}
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake("-n", "--nolock", f"{tmp_path}/results/spatial/deepcolor.h5ad", "--configfile",
                           str(tmp_path / "extra.yaml"), "--config", f"results={tmp_path}/results")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    jobs = out.split("Job stats:")[1]
    assert "spatial_input" in jobs and "deepcolor" in jobs


def test_spatial_tarball_is_fetched_and_unpacked(counts, tmp_path) -> None:
    """10x publishes spatial/ as <sample>_spatial.tar.gz: fetched with a manifest, unpacked as the folder."""
    import tarfile

    from cellfate.sources.fetch import fetch_archive

    src = write_spaceranger(counts, tmp_path / "published")
    with tarfile.open(tmp_path / "S1_spatial.tar.gz", "w:gz") as tar:
        tar.add(src / "spatial", arcname="spatial")
    outs = tmp_path / "run" / "outs"
    outs.mkdir(parents=True)
    (outs / "filtered_feature_bc_matrix.h5").write_bytes((src / "filtered_feature_bc_matrix.h5").read_bytes())
    fetch_archive(f"file://{tmp_path / 'S1_spatial.tar.gz'}", str(outs / "spatial"), manifest_dir=str(tmp_path / "m"),
                  source="files", label="spatial")
    assert sorted(p.name for p in (outs / "spatial").iterdir()) == sorted(p.name for p in (src / "spatial").iterdir())
    assert list((tmp_path / "m").rglob("*.json"))  # the tarball's size and sha256 are recorded
    assert read_section(outs, "s1").n_obs == counts.n_obs
