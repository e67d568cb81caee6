"""Atomic writes leave either the complete result or nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cellfate.io import atomic_path, write_text


def test_success_renames_into_place_with_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    write_text(target, "hello")
    assert target.read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_leaves_nothing_and_keeps_an_older_result(tmp_path: Path) -> None:
    target = tmp_path / "out.h5ad"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".h5ad" and tmp.parent == tmp_path
            tmp.write_text("half-written")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]


def test_directory_outputs_are_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "shards"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "data.arrow").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["data.arrow"]
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]
