"""Each stage's entry refuses a bad input file in one line naming it (no library traceback):
velocity h5ad (missing layers, layers of different shapes, truncated, 0 cells), the QC'd cells of
the loom join, and spots without coordinates for DeepCOLOR."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

from cellfate.dynamics import pipeline as dynamics
from cellfate.errors import CellfateError
from cellfate.spatial import pipeline as spatial
from cellfate.velocity.loom import loom_to_h5ad


def _velocity(path: Path, n_cells: int = 20) -> Path:
    rng = np.random.default_rng(0)
    counts = rng.poisson(2, (n_cells, 30)).astype(np.float32)
    adata = ad.AnnData(X=counts.copy(), layers={"spliced": counts.copy(), "unspliced": counts.copy()})
    adata.write_h5ad(path)
    return path


def _one_line(err: pytest.ExceptionInfo, path: Path, text: str) -> None:
    message = str(err.value)
    assert "\n" not in message and str(path) in message and text in message, message


def test_zero_cells_into_vicdyf_is_called_zero_cells(tmp_path: Path) -> None:
    path = _velocity(tmp_path / "v.h5ad", n_cells=0)
    with pytest.raises(CellfateError) as err:
        dynamics.fit(path, tmp_path / "model", tmp_path / "out.h5ad")
    _one_line(err, path, "has 0 cells")
    assert not (tmp_path / "out.h5ad").exists()


def test_velocity_h5ad_truncated_or_with_mismatched_layers_is_one_line(tmp_path: Path) -> None:
    good = _velocity(tmp_path / "v.h5ad")
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CellfateError) as err:
        dynamics.fit(cut, tmp_path / "model", tmp_path / "out.h5ad")
    _one_line(err, cut, "truncated")
    with h5py.File(good, "r+") as handle:  # unspliced of another shape than spliced
        del handle["layers/unspliced"]
        handle["layers/unspliced"] = np.zeros((5, 7), np.float32)
        handle["layers/unspliced"].attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    with pytest.raises(CellfateError) as err:
        dynamics.fit(good, tmp_path / "model", tmp_path / "out.h5ad")
    _one_line(err, good, "not a readable velocity h5ad")
    no_layers = tmp_path / "plain.h5ad"
    ad.AnnData(X=np.ones((4, 3), np.float32)).write_h5ad(no_layers)
    with pytest.raises(CellfateError) as err:
        dynamics.fit(no_layers, tmp_path / "model", tmp_path / "out.h5ad")
    _one_line(err, no_layers, "has no layer 'spliced'")


def test_truncated_qc_cells_for_the_loom_join_is_one_line(tmp_path: Path) -> None:
    good = _velocity(tmp_path / "cells.h5ad")
    cut = tmp_path / "cells_cut.h5ad"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CellfateError) as err:
        loom_to_h5ad(tmp_path, "S1", tmp_path / "out.h5ad", cells_h5ad=cut)
    _one_line(err, cut, "truncated")


def test_spots_without_coordinates_are_refused_before_deepcolor_fits(tmp_path: Path) -> None:
    reference = _velocity(tmp_path / "reference.h5ad")
    spots = _velocity(tmp_path / "spots.h5ad")  # counts, but no obsm['spatial']
    with pytest.raises(CellfateError) as err:
        spatial.deepcolor(reference, spots, tmp_path / "model", tmp_path / "cells.h5ad", tmp_path / "p.npy",
                          tmp_path / "mapped.h5ad")
    _one_line(err, spots, "has no obsm['spatial']")
    assert not (tmp_path / "model").exists() and not (tmp_path / "mapped.h5ad").exists()
