"""Spliced/unspliced counting: velocyto's counts equal the simulated ones exactly, bad inputs fail clearly."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pysam
import pytest

from cellfate.errors import CellfateError
from cellfate.simulate.bam import write_velocyto_inputs
from cellfate.velocity import guards
from cellfate.velocity.loom import bare_barcode, join_cells, loom_to_h5ad
from cellfate.velocity.velocyto import run_velocyto

N_CELLS, N_GENES = 40, 10


def make_counts(seed: int = 11):
    rng = np.random.default_rng(seed)
    spliced = rng.poisson(rng.uniform(1.0, 6.0, N_GENES), size=(N_CELLS, N_GENES))
    unspliced = rng.poisson(rng.uniform(0.5, 3.0, N_GENES), size=(N_CELLS, N_GENES))
    spliced[:, 3] = 0  # a gene seen only unspliced
    spliced[:4, :2] = unspliced[:4, :2] = 0
    bases = np.array(list("ACGT"))
    barcodes = ["".join(bases[rng.integers(0, 4, 16)]) for _ in range(N_CELLS)]
    genes = [f"ENSMUSG{800000 + g:011d}" for g in range(N_GENES)]
    return spliced, unspliced, barcodes, genes, [f"Gene{g}" for g in range(N_GENES)]


@pytest.fixture(scope="module")
def counts():
    return make_counts()


@pytest.fixture(scope="module")
def inputs(counts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bam")
    paths = {"bam": folder / "possorted_genome_bam.bam", "gtf": folder / "genes.gtf", "barcodes": folder / "barcodes.tsv"}
    write_velocyto_inputs(*counts, paths["bam"], paths["gtf"], paths["barcodes"], seed=5)
    return paths


def _rewrite(src: Path, dst: Path, edit=None, rename=None) -> Path:
    """Copy a BAM, editing each read and/or renaming chromosomes; indexed."""
    with pysam.AlignmentFile(str(src)) as bam:
        header = bam.header.to_dict()
        if rename:
            for sq in header["SQ"]:
                sq["SN"] = rename(sq["SN"])
        with pysam.AlignmentFile(str(dst), "wb", header=header) as out:
            for read in bam:  # reads keep their reference index, so renaming needs no change here
                if edit:
                    edit(read)
                out.write(read)
    pysam.index(str(dst))
    return dst


def test_velocyto_counts_equal_the_simulated_counts(counts, inputs, tmp_path) -> None:
    if not (Path(sys.executable).parent / "velocyto").exists() and shutil.which("velocyto") is None:
        pytest.skip("velocyto is not installed (pip install --no-build-isolation velocyto==0.17.17)")
    spliced, unspliced, barcodes, genes, _ = counts
    outdir = tmp_path / "velocity" / "demo" / "velocyto"
    loom = run_velocyto(inputs["bam"], inputs["gtf"], outdir, sample_id="demo", barcodes=inputs["barcodes"])
    assert loom == outdir / "demo.loom" and sorted(p.name for p in outdir.iterdir()) == ["demo.loom"]
    assert not guards.stale_cellsorted_path(inputs["bam"]).exists()  # the input folder is left untouched
    qc = ad.AnnData(obs=pd.DataFrame({"barcode": [f"{b}-1" for b in barcodes[5:]], "qc_label": "ok"},
                                     index=[f"cell{i}" for i in range(5, N_CELLS)]))
    qc.write_h5ad(tmp_path / "qc.h5ad")
    loom_to_h5ad(outdir, "demo", tmp_path / "demo.h5ad", cells_h5ad=tmp_path / "qc.h5ad")
    result = ad.read_h5ad(tmp_path / "demo.h5ad")
    assert list(result.obs_names) == list(qc.obs_names)  # the QC'd cells, in their order
    assert (result.obs["qc_label"] == "ok").all()
    assert result.obs["loom_cell_id"].iloc[0] == f"demo:{barcodes[5]}x"
    for layer, truth in (("spliced", spliced), ("unspliced", unspliced)):
        assert np.issubdtype(result.layers[layer].dtype, np.integer)
        got = result[:, genes].layers[layer].toarray()
        np.testing.assert_array_equal(got, truth[5:])
    assert result.layers["ambiguous"].sum() == 0
    assert list(result.var.loc[genes, "symbol"]) == [f"Gene{g}" for g in range(N_GENES)]


def test_bare_barcode() -> None:
    assert bare_barcode("sample:ACGTACGTACGTACGTx") == "ACGTACGTACGTACGT"
    assert bare_barcode("ACGTACGTACGTACGT-1") == "ACGTACGTACGTACGT"
    assert bare_barcode("ACGTACGTACGTACGT") == "ACGTACGTACGTACGT"


def test_good_inputs_pass_the_checks(inputs) -> None:
    guards.check_inputs(inputs["bam"], inputs["gtf"], inputs["barcodes"])


def test_reads_without_nh(inputs, tmp_path) -> None:
    bam = _rewrite(inputs["bam"], tmp_path / "a.bam", edit=lambda r: r.set_tag("NH", None))
    with pytest.raises(CellfateError, match="no NH tag"):
        guards.check_inputs(bam, inputs["gtf"])


def test_reads_without_cell_barcodes(inputs, tmp_path) -> None:
    bam = _rewrite(inputs["bam"], tmp_path / "a.bam", edit=lambda r: r.set_tag("CB", None))
    with pytest.raises(CellfateError, match="carry both CB and UB"):
        guards.check_inputs(bam, inputs["gtf"])


def test_too_few_tagged_reads(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(guards, "MIN_TAGGED_READS", 10**6)
    with pytest.raises(CellfateError, match="Main matrix cannot be empty"):
        guards.check_inputs(inputs["bam"], inputs["gtf"])


def test_chromosome_names_differ(inputs, tmp_path) -> None:
    gtf = tmp_path / "chr.gtf"
    gtf.write_text("".join(line if line.startswith("#") else "chr" + line for line in inputs["gtf"].read_text().splitlines(True)))
    with pytest.raises(CellfateError, match="no chromosome name is shared"):
        guards.check_inputs(inputs["bam"], gtf)


def test_chromosome_names_with_underscore(inputs, tmp_path) -> None:
    bam = _rewrite(inputs["bam"], tmp_path / "a.bam", rename=lambda name: f"{name}_random")
    gtf = tmp_path / "u.gtf"
    gtf.write_text("".join(line if line.startswith("#") else line.replace("\t", "_random\t", 1)
                           for line in inputs["gtf"].read_text().splitlines(True)))
    with pytest.raises(CellfateError, match="'_'"):
        guards.check_inputs(bam, gtf)


def test_stale_cellsorted_bam(inputs, tmp_path) -> None:
    bam = tmp_path / "possorted.bam"
    shutil.copy(inputs["bam"], bam)
    (tmp_path / "cellsorted_possorted.bam").write_text("half-written")
    with pytest.raises(CellfateError, match="silently reuse"):
        guards.check_inputs(bam, inputs["gtf"])


def test_barcodes_that_match_no_cell(inputs, tmp_path) -> None:
    barcodes = tmp_path / "barcodes.tsv"
    barcodes.write_text("".join(line.removesuffix("-1\n") + "\n" for line in inputs["barcodes"].read_text().splitlines(True)))
    with pytest.raises(CellfateError, match="suffix"):
        guards.check_inputs(inputs["bam"], inputs["gtf"], barcodes)


def test_missing_file(inputs, tmp_path) -> None:
    with pytest.raises(CellfateError, match="GTF does not exist"):
        guards.check_inputs(inputs["bam"], tmp_path / "none.gtf")


def test_qc_cells_absent_from_the_loom() -> None:
    counts = ad.AnnData(np.ones((2, 1)), obs=pd.DataFrame(index=["AAAA", "CCCC"]))
    qc = ad.AnnData(obs=pd.DataFrame({"barcode": ["GGGG-1"]}, index=["x"]))
    with pytest.raises(CellfateError, match="no QC'd cell is in the loom"):
        join_cells(counts, qc)
