"""Bad inputs of the compute stages through the Snakemake interface: one error line naming the
file and the problem, no traceback, no output (spots without coordinates, a truncated reference)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from fault_workflow import run_targets, write_config

pytestmark = pytest.mark.slow


def _cells(path: Path, n: int, spatial: bool) -> Path:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(X=rng.poisson(1, (n, 40)).astype(np.float32),
                       obs=pd.DataFrame({"cell_type": rng.choice(["a", "b"], n)}, index=[f"c{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(40)]))
    if spatial:
        adata.obsm["spatial"] = rng.random((n, 2))
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("fault", ["no_spatial", "truncated_reference"])
def test_deepcolor_refuses_bad_spots_or_reference_in_one_line(tmp_path: Path, fault: str) -> None:
    reference = _cells(tmp_path / "reference.h5ad", 60, spatial=False)
    spots = _cells(tmp_path / "spots.h5ad", 30, spatial=fault != "no_spatial")
    if fault == "truncated_reference":
        reference.write_bytes(reference.read_bytes()[:4000])
    config_path = write_config(tmp_path, "http://127.0.0.1:9")  # no download is needed
    config = yaml.safe_load(config_path.read_text())
    config["spatial"].update(reference=str(reference), spots=str(spots))
    config_path.write_text(yaml.safe_dump(config))
    run = run_targets(tmp_path, config_path, "spatial/deepcolor.h5ad")
    assert run.returncode != 0
    assert "Traceback" not in run.output + run.log, (run.output + run.log)[-3000:]
    errors = run.error_lines()
    bad, problem = (spots, "has no obsm['spatial']") if fault == "no_spatial" else (reference, "truncated")
    assert len(errors) == 1 and f"{bad}: " in errors[0] and problem in errors[0], errors
    assert not (tmp_path / "results" / "spatial").exists() or not any((tmp_path / "results" / "spatial").iterdir())
