"""The 10x-style BAM + GTF simulator: velocyto counts the simulated molecules back exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest

from cellfate.errors import CellfateError
from cellfate.simulate.bam import READ_LENGTH, write_velocyto_inputs

N_CELLS, N_GENES = 40, 12
ONLY_UNSPLICED = 5  # this gene has unspliced counts only
ALL_ZERO = 9  # this gene has no counts at all


def make_counts(seed: int = 7):
    rng = np.random.default_rng(seed)
    spliced_means = rng.uniform(1.0, 7.0, size=N_GENES)
    unspliced_means = rng.uniform(0.5, 3.0, size=N_GENES)
    spliced = rng.poisson(spliced_means, size=(N_CELLS, N_GENES))
    unspliced = rng.poisson(unspliced_means, size=(N_CELLS, N_GENES))
    spliced[:, ONLY_UNSPLICED] = 0
    spliced[:, ALL_ZERO] = 0
    unspliced[:, ALL_ZERO] = 0
    spliced[:5, :4] = 0  # some cells lack some genes entirely
    unspliced[:5, :4] = 0
    bases = np.array(list("ACGT"))
    barcodes = ["".join(bases[rng.integers(0, 4, size=16)]) for _ in range(N_CELLS)]
    assert len(set(barcodes)) == N_CELLS
    gene_ids = [f"ENSMUSG{900000 + g:011d}" for g in range(N_GENES)]
    gene_names = [f"Simgene{g}" for g in range(N_GENES)]
    return spliced, unspliced, barcodes, gene_ids, gene_names


@pytest.fixture(scope="module")
def counts():
    return make_counts()


@pytest.fixture(scope="module")
def written(counts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bam_sim")
    paths = {"bam": out / "possorted_genome_bam.bam", "gtf": out / "genes.gtf", "barcodes": out / "barcodes.tsv"}
    write_velocyto_inputs(*counts, paths["bam"], paths["gtf"], paths["barcodes"], seed=3)
    return paths


def test_counts_have_the_intended_shape(counts):
    spliced, unspliced, *_ = counts
    total = spliced.sum() + unspliced.sum()
    assert 2_000 < total < 4_000
    assert (spliced == 0).any() and (unspliced == 0).any()
    assert spliced[:, ONLY_UNSPLICED].sum() == 0 < unspliced[:, ONLY_UNSPLICED].sum()


def test_bam_reads_and_tags(counts, written):
    spliced, unspliced, barcodes, gene_ids, _ = counts
    assert Path(str(written["bam"]) + ".bai").exists()
    assert written["barcodes"].read_text().splitlines() == [f"{b}-1" for b in barcodes]
    with pysam.AlignmentFile(str(written["bam"])) as bam:
        assert bam.header["HD"]["SO"] == "coordinate"
        assert all("_" not in sq["SN"] for sq in bam.header["SQ"])
        reads = list(bam)
        assert bam.mapped == len(reads)  # the index is usable
    assert len(reads) == spliced.sum() + unspliced.sum()
    n_junction = sum(1 for r in reads if any(op == 3 for op, _ in r.cigartuples))
    assert n_junction == spliced.sum()
    per_cell = {f"{b}-1": 0 for b in barcodes}
    umis = set()
    for r in reads:
        assert r.mapping_quality == 255
        assert r.get_tag("NH") == 1
        assert r.query_length == READ_LENGTH
        per_cell[r.get_tag("CB")] += 1
        umis.add((r.get_tag("CB"), r.get_tag("UB")))
    assert len(umis) == len(reads)  # unique UMI per molecule within its cell
    assert list(per_cell.values()) == list(spliced.sum(axis=1) + unspliced.sum(axis=1))
    positions = [(r.reference_id, r.reference_start) for r in reads]
    assert positions == sorted(positions)
    strands = {r.is_reverse for r in reads}
    assert strands == {True, False}


def test_gtf_design(counts, written):
    gene_ids = counts[3]
    lines = [line.split("\t") for line in written["gtf"].read_text().splitlines() if not line.startswith("#")]
    kinds = {f[2] for f in lines}
    assert kinds == {"gene", "transcript", "exon"}
    genes = [f for f in lines if f[2] == "gene"]
    ids = [f[8].split('"')[1] for f in genes]
    assert set(gene_ids) < set(ids)
    chroms = {f[0] for f in genes}
    assert len(chroms) >= 2 and all("_" not in c and not c.startswith("chr") for c in chroms)
    for chrom in chroms:  # the last gene of each strand is a read-free padding gene
        for strand in "+-":
            on = sorted((int(f[3]), f[8].split('"')[1]) for f in genes if f[0] == chrom and f[6] == strand)
            assert on[-1][1].startswith("CELLFATEPAD")
    by_chrom: dict[str, list[tuple[int, int]]] = {}
    for f in genes:
        by_chrom.setdefault(f[0], []).append((int(f[3]), int(f[4])))
    for spans in by_chrom.values():  # no overlaps
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def test_stale_cellsorted_file_is_removed(counts, tmp_path):
    stale = tmp_path / "cellsorted_x.bam"
    stale.write_text("old")
    write_velocyto_inputs(*counts, tmp_path / "x.bam", tmp_path / "x.gtf", tmp_path / "bc.tsv")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bc.tsv", "x.bam", "x.bam.bai", "x.gtf"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(unspliced=a["unspliced"][:, :-1]), "shape"),
        (lambda a: a.update(spliced=-a["spliced"]), "negative"),
        (lambda a: a.update(spliced=a["spliced"] + 0.5), "whole numbers"),
        (lambda a: a.update(barcodes=a["barcodes"][:-1]), "barcodes for"),
        (lambda a: a.update(barcodes=[a["barcodes"][1]] + a["barcodes"][1:]), "not unique"),
        (lambda a: a.update(barcodes=["ACGTN" + b[5:] for b in a["barcodes"]]), "16 bases"),
        (lambda a: a.update(barcodes=[b + "-1" for b in a["barcodes"]]), "16 bases"),
        (lambda a: a.update(gene_ids=[a["gene_ids"][0]] * N_GENES), "not unique"),
        (lambda a: a.update(gene_names=a["gene_names"][:-1]), "gene_names"),
        (lambda a: a.update(gene_ids=["bad id"] + a["gene_ids"][1:]), "whitespace"),
        (lambda a: a.update(spliced=a["spliced"][:, :3] * 0, unspliced=a["unspliced"][:, :3] * 0 + 1,
                            gene_ids=a["gene_ids"][:3], gene_names=a["gene_names"][:3]), "Main matrix cannot be empty"),
    ],
)
def test_bad_inputs(counts, tmp_path, change, message):
    spliced, unspliced, barcodes, gene_ids, gene_names = counts
    args = dict(spliced=spliced, unspliced=unspliced, barcodes=barcodes, gene_ids=gene_ids, gene_names=gene_names)
    change(args)
    with pytest.raises(CellfateError, match=message):
        write_velocyto_inputs(**args, bam_path=tmp_path / "a.bam", gtf_path=tmp_path / "a.gtf",
                              barcodes_path=tmp_path / "b.tsv")
    assert list(tmp_path.iterdir()) == []


def test_velocyto_counts_back_exactly(counts, written, tmp_path):
    velocyto = Path(sys.executable).parent / "velocyto"
    if not velocyto.exists():
        pytest.skip(f"velocyto is not installed next to {sys.executable} (pip install velocyto==0.17.17)")
    loompy = pytest.importorskip("loompy")
    spliced, unspliced, barcodes, gene_ids, _ = counts
    outdir = tmp_path / "velocyto"
    result = subprocess.run(
        [str(velocyto), "run", "-b", str(written["barcodes"]), "-o", str(outdir), "-e", "sample",
         str(written["bam"]), str(written["gtf"])],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with loompy.connect(str(outdir / "sample.loom"), mode="r", validate=False) as loom:
        accessions = list(loom.ra["Accession"])
        # velocyto names cells "<sample>:<barcode without -1>x" when given -b.
        cell_ids = [c.split(":", 1)[1].removesuffix("x") for c in loom.ca["CellID"]]
        layers = {name: loom.layers[name][:, :] for name in ("spliced", "unspliced", "ambiguous")}
    assert sorted(cell_ids) == sorted(barcodes)
    rows = [accessions.index(g) for g in gene_ids]
    cols = [cell_ids.index(b) for b in barcodes]
    got = {name: m[np.ix_(rows, cols)].T for name, m in layers.items()}  # cells x genes, our order
    np.testing.assert_array_equal(got["spliced"], spliced)
    np.testing.assert_array_equal(got["unspliced"], unspliced)
    assert layers["ambiguous"].sum() == 0
    pads = [i for i, a in enumerate(accessions) if a not in set(gene_ids)]
    assert all(layers[name][pads].sum() == 0 for name in layers)
    assert sum(m.sum() for m in layers.values()) == spliced.sum() + unspliced.sum()


def test_same_seed_same_bam(counts, written, tmp_path):
    write_velocyto_inputs(*counts, tmp_path / "a.bam", tmp_path / "a.gtf", tmp_path / "a.tsv", seed=3)
    with pysam.AlignmentFile(str(written["bam"])) as a, pysam.AlignmentFile(str(tmp_path / "a.bam")) as b:
        assert str(a.header) == str(b.header)
        assert [r.to_string() for r in a] == [r.to_string() for r in b]
    assert (tmp_path / "a.gtf").read_text() == written["gtf"].read_text()
