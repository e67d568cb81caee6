"""The .RData dgCMatrix writer and reader: round trips through Python and through R itself."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cellfate.errors import CellfateError
from cellfate.simulate.rdata_writer import write_rdata_dgcmatrix
from cellfate.sources.rdata import read_rdata_dgcmatrix


@pytest.fixture(scope="module")
def rscript() -> str:
    path = shutil.which("Rscript")
    if path is None:
        pytest.skip("Rscript not installed: apt-get install r-base-core r-cran-matrix")
    return path


def run_r(rscript: str, code: str, cwd: Path) -> None:
    """Run R code from a script file (``Rscript -e`` mangles multi-line code) in ``cwd``."""
    script = cwd / "script.R"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run([rscript, "--vanilla", str(script)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def r_strings(names: list[str]) -> str:
    """An R ``c(...)`` literal for plain strings."""
    return "c(" + ", ".join(f'"{n}"' for n in names) + ")"


R_GENES = ["Xkr4_ENSMUSG00000051951", "Sox17_ENSMUSG00000025902", "Mrpl15-ENSMUSG00000033845.3"]
R_CELLS = ["AAAC_1", "AAAG_1", "AACC_1", "AACT_1"]
COMPRESSIONS = ["gzip", "bzip2", "xz", "none"]


@pytest.fixture(scope="module")
def r_written(rscript, tmp_path_factory) -> Path:
    """Files saved by R itself: the same dgCMatrix under each compression, and a base matrix ``sm``.

    One R session makes them all, because starting R and loading Matrix is most of the cost.
    """
    folder = tmp_path_factory.mktemp("r_written")
    run_r(
        rscript,
        f"""
        suppressMessages(library(Matrix))
        sm <- sparseMatrix(i = c(1L, 3L, 3L, 2L), j = c(1L, 1L, 2L, 4L), x = c(5, 1, 7, 2), dims = c(3L, 4L),
                           dimnames = list({r_strings(R_GENES)}, {r_strings(R_CELLS)}))
        other <- 1:3
        for (how in c("gzip", "bzip2", "xz")) save(sm, other, file = paste0(how, ".RData"), compress = how)
        save(sm, other, file = "none.RData", compress = FALSE)
        sm <- matrix(c(1, 0, 2, 3), 2)
        save(sm, file = "base.RData")
        """,
        folder,
    )
    return folder


@pytest.fixture
def counts() -> tuple[sp.csc_matrix, list[str], list[str]]:
    """A seeded genes x cells count matrix with an empty row and an empty column, PanglaoDB-style names."""
    rng = np.random.default_rng(7)
    n_genes, n_cells = 60, 25
    dense = rng.poisson(0.6, size=(n_genes, n_cells)) * (rng.random((n_genes, n_cells)) < 0.3)
    dense[11, :] = 0
    dense[:, 4] = 0
    dense[0, 0] = 123456  # a large count survives as an exact double
    genes = [f"Gene{g}_ENSMUSG{g:011d}" for g in range(n_genes)]
    genes[3] = "H2-K1_ENSMUSG00000061232"  # symbol with a dash
    genes[5] = "Gm1234-ENSMUSG00000000005.2"  # other separator and a version suffix
    genes[6] = "Grünfeld_ENSMUSG00000000006"  # a non-ASCII name must be marked UTF-8
    cells = [f"{''.join(rng.choice(list('ACGT'), 16))}-{c}" for c in range(n_cells)]
    return sp.csc_matrix(dense), genes, cells


def assert_same(matrix: sp.spmatrix, expected: sp.spmatrix) -> None:
    assert matrix.shape == expected.shape
    assert (sp.csc_matrix(matrix) != sp.csc_matrix(expected)).nnz == 0


def test_python_round_trip(tmp_path, counts):
    matrix, genes, cells = counts
    path = tmp_path / "sample.RData"
    write_rdata_dgcmatrix(path, matrix, genes, cells)
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip, as R's save() writes
    assert gzip.decompress(path.read_bytes())[:7] == b"RDX3\nX\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sample.RData"]  # no temporary left behind

    got, got_genes, got_cells = read_rdata_dgcmatrix(path)
    assert isinstance(got, sp.csc_matrix)
    assert got.dtype == np.float64
    assert_same(got, matrix)
    np.testing.assert_array_equal(got.toarray(), matrix.toarray().astype(np.float64))
    assert got_genes == genes
    assert got_cells == cells


def test_other_object_name_and_coo_input(tmp_path, counts):
    matrix, genes, cells = counts
    path = tmp_path / "other.RData"
    write_rdata_dgcmatrix(path, sp.coo_matrix(matrix), genes, cells, name="counts")
    got, _, _ = read_rdata_dgcmatrix(path, name="counts")
    assert_same(got, matrix)


def test_writer_rejects_mismatched_names(tmp_path, counts):
    matrix, genes, cells = counts
    with pytest.raises(ValueError, match="row names"):
        write_rdata_dgcmatrix(tmp_path / "bad.RData", matrix, genes[:-1], cells)
    assert not list(tmp_path.iterdir())


def test_r_loads_python_file(tmp_path, counts, rscript):
    matrix, genes, cells = counts
    write_rdata_dgcmatrix(tmp_path / "sample.RData", matrix, genes, cells)
    run_r(
        rscript,
        """
        suppressMessages(library(Matrix))
        load("sample.RData")
        stopifnot(is(sm, "dgCMatrix"), isTRUE(validObject(sm)))
        s <- summary(sm)
        write.table(data.frame(i = s$i, j = s$j, x = s$x), "triplets.tsv", sep = "\\t",
                    row.names = FALSE, col.names = FALSE)
        con <- file("rownames.txt", encoding = "UTF-8"); writeLines(rownames(sm), con); close(con)
        writeLines(colnames(sm), "colnames.txt")
        """,
        tmp_path,
    )
    triplets = np.loadtxt(tmp_path / "triplets.tsv", dtype=np.int64, ndmin=2)
    from_r = sp.csc_matrix((triplets[:, 2], (triplets[:, 0] - 1, triplets[:, 1] - 1)), shape=matrix.shape)
    assert len(triplets) == matrix.nnz
    assert_same(from_r, matrix)
    assert (tmp_path / "rownames.txt").read_text(encoding="utf-8").splitlines() == genes
    assert (tmp_path / "colnames.txt").read_text().splitlines() == cells


@pytest.mark.parametrize("compress", COMPRESSIONS)
def test_reads_r_written_file(r_written, compress):
    got, genes, cells = read_rdata_dgcmatrix(r_written / f"{compress}.RData")
    expected = np.array([[5, 0, 0, 0], [0, 0, 0, 2], [1, 7, 0, 0]], dtype=np.float64)
    np.testing.assert_array_equal(got.toarray(), expected)
    assert genes == R_GENES
    assert cells == R_CELLS


def test_truncated_file(tmp_path, counts):
    matrix, genes, cells = counts
    good = tmp_path / "good.RData"
    write_rdata_dgcmatrix(good, matrix, genes, cells)
    data = good.read_bytes()
    bad = tmp_path / "truncated.RData"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CellfateError, match="truncated") as err:
        read_rdata_dgcmatrix(bad)
    assert str(bad) in str(err.value)
    # Cut inside the uncompressed stream, too: gzip is fine but the R data ends early.
    raw = tmp_path / "truncated_raw.RData"
    raw.write_bytes(gzip.compress(gzip.decompress(data)[:-300]))
    with pytest.raises(CellfateError, match="truncated") as err:
        read_rdata_dgcmatrix(raw)
    assert str(raw) in str(err.value)


def test_not_an_r_file(tmp_path):
    path = tmp_path / "page.RData"
    path.write_text("<html><body>404 Not Found</body></html>\n")
    with pytest.raises(CellfateError, match="not an R workspace") as err:
        read_rdata_dgcmatrix(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.RData"
    with pytest.raises(CellfateError, match="not found") as err:
        read_rdata_dgcmatrix(path)
    assert str(path) in str(err.value)


def test_workspace_without_sm(tmp_path, counts):
    matrix, genes, cells = counts
    path = tmp_path / "named.RData"
    write_rdata_dgcmatrix(path, matrix, genes, cells, name="counts")
    with pytest.raises(CellfateError, match="no object named `sm`.*`counts`") as err:
        read_rdata_dgcmatrix(path)
    assert str(path) in str(err.value)


def test_sm_is_base_matrix(r_written):
    path = r_written / "base.RData"
    with pytest.raises(CellfateError, match=r"base R matrix \(numeric\), not a dgCMatrix") as err:
        read_rdata_dgcmatrix(path)
    assert str(path) in str(err.value)


def test_inconsistent_slots(tmp_path, counts):
    """A dgCMatrix whose Dim claims one column more than its p slot describes."""
    matrix, genes, cells = counts
    good = tmp_path / "good.RData"
    write_rdata_dgcmatrix(good, matrix, genes, cells)
    n_rows, n_cols = matrix.shape
    dim_slot = b"Dim" + (13).to_bytes(4, "big") + (2).to_bytes(4, "big") + n_rows.to_bytes(4, "big")
    data = gzip.decompress(good.read_bytes())
    good_dim, bad_dim = (dim_slot + n.to_bytes(4, "big") for n in (n_cols, n_cols + 1))
    assert data.count(good_dim) == 1
    path = tmp_path / "bad.RData"
    path.write_bytes(gzip.compress(data.replace(good_dim, bad_dim)))
    with pytest.raises(CellfateError, match=rf"len\(p\) = {n_cols + 1} \(expected {n_cols + 2}\)") as err:
        read_rdata_dgcmatrix(path)
    assert str(path) in str(err.value)
