"""Per-stage conda envs pin exactly what pyproject.toml and the Makefile pin."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from conftest import REPO

CONDA_TO_PIP = {"velocyto.py": "velocyto"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    pins = {}
    for dep in deps:
        name, version = dep.split("==")
        pins[_norm(name)] = version
    for name, version in re.findall(r"^[A-Z]+ := ([\w.-]+)==([\w.]+)$", (REPO / "Makefile").read_text(), flags=re.M):
        pins.setdefault(_norm(name), version)
        assert pins[_norm(name)] == version, f"Makefile pins {name}=={version}, pyproject {pins[_norm(name)]}"
    return pins


def test_every_dependency_is_pinned_exactly() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    loose = [d for d in project["dependencies"] if "==" not in d]
    assert not loose, f"unpinned dependencies: {loose}"


@pytest.mark.parametrize("env", sorted(p.name for p in (REPO / "envs").glob("*.yaml")))
def test_env_pins_agree_with_pyproject(env: str) -> None:
    pins = _project_pins()
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    checked = 0
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if "==" in line:
                    name, version = line.split("==")
                    assert pins.get(_norm(name)) == version, f"{env}: {line} but pyproject pins {pins.get(_norm(name))}"
                    checked += 1
                else:
                    assert line == "-e ..", f"{env}: unpinned pip entry {line!r}"
        elif dep.startswith("python="):
            assert dep == "python=3.11"
        elif "=" in dep:
            name, version = dep.split("=", 1)
            pip_name = CONDA_TO_PIP.get(name)
            if pip_name:
                assert pins[_norm(pip_name)] == version, f"{env}: {dep}"
                checked += 1
    assert checked > 0


def test_every_rule_env_exists() -> None:
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', smk.read_text()):
            assert (REPO / env).exists(), f"{smk.name} uses missing {env}"
