"""The config and sample sheets are validated before any job runs, with the bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, run_snakemake


def _merge(base: dict, override: dict) -> dict:
    """Snakemake's deep merge of a --configfile over the Snakefile's configfile."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = _merge(config, yaml.safe_load((REPO / "config" / name).read_text()))
    validate(config, str(REPO / "config" / "schema.yaml"))
    if name == "paper.yaml":  # nothing of the demo leaks into the paper run
        assert config["simulate"] is None and not any("{simulated}" in u for u in config["download"]["urls"].values())


def _demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _dry_run_with(tmp_path: Path, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake("-n", "--nolock", "--configfile", str(path), "--config", f"results={tmp_path}/results")
    result.output = result.stdout + result.stderr  # snakemake reports validation errors on stdout
    return result


def test_wrong_type_fails_before_any_job_naming_the_key(tmp_path: Path) -> None:
    config = _demo_config()
    config["simulate"]["corpus"]["n_genes"] = "many"
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0
    assert "n_genes" in result.output and "is not of type 'integer'" in result.output
    assert "Job stats" not in result.output


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    config = _demo_config()
    config["resutls"] = "typo"
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0
    assert "resutls" in result.output


def test_unknown_simulated_cell_type_is_rejected(tmp_path: Path) -> None:
    config = _demo_config()
    config["simulate"]["corpus"]["tissues"]["liver"].append("unicorn cell")
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0 and "unicorn cell" in result.output


def test_bad_sample_sheet_row_is_rejected(tmp_path: Path) -> None:
    sheet = tmp_path / "panglaodb.tsv"
    sheet.write_text("sample_id\tsra\tsrs\ttissue\tsim_n_cells\nS1\tnot-an-accession\tSRS1\tliver\t100\n")
    config = _demo_config()
    config["samples"]["panglaodb"] = str(sheet)
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0
    assert "not-an-accession" in result.output


def test_duplicate_sample_id_is_rejected_naming_the_sheet(tmp_path: Path) -> None:
    sheet = tmp_path / "panglaodb.tsv"
    row = "SRA1_SRS1\tSRA1\tSRS1\tliver\t100\n"
    sheet.write_text("sample_id\tsra\tsrs\ttissue\tsim_n_cells\n" + row + row)
    config = _demo_config()
    config["samples"]["panglaodb"] = str(sheet)
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0
    assert _error_lines(result) == [f"error: {sheet}: sample_id 'SRA1_SRS1' appears twice"]


def _error_lines(result) -> list[str]:
    """What a failed start printed, less Snakemake's note about --config extending the configfile."""
    return [line for line in result.output.splitlines() if line.strip() and "is extended by additional config" not in line]


def test_unknown_top_level_key_is_one_short_line(tmp_path: Path) -> None:
    config = _demo_config()
    config["resutls"] = "typo"
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0
    assert _error_lines(result) == ["error: config: Additional properties are not allowed ('resutls' was unexpected)"]


def _sheet_run(tmp_path: Path, text: str | None, source: str = "panglaodb"):
    sheet = tmp_path / f"{source}.tsv"
    if text is not None:
        sheet.write_text(text)
    config = _demo_config()
    config["samples"][source] = str(sheet)
    return sheet, _dry_run_with(tmp_path, config)


@pytest.mark.parametrize(
    ("source", "text", "message"),
    [
        ("panglaodb", "sample_id\tsra\tsrs\tsim_n_cells\nS1\tSRA1\tSRS1\t100\n", "row 1: 'tissue' is a required property"),
        ("expression_atlas", "sample_id\ttissue\nE1\tlung\n", "row 1: 'accession' is a required property"),
        ("cellxgene", "sample_id\ttissue\nC1\tspleen\n", "row 1: 'dataset_id' is a required property"),
        ("panglaodb", "sample_id\tsra\tsrs\ttissue\tsim_n_cells\nS1\tSRA1\tSRS1\tliver\tmany\n",
         "column sim_n_cells holds 'many', not a number"),
        ("panglaodb", None, "the panglaodb sample sheet does not exist (config samples.panglaodb)"),
    ],
)
def test_sample_sheet_problems_are_one_line_naming_the_sheet(tmp_path: Path, source, text, message) -> None:
    sheet, result = _sheet_run(tmp_path, text, source)
    assert result.returncode != 0
    assert _error_lines(result) == [f"error: {sheet}: {message}" if "row" not in message else f"error: {sheet} {message}"]


def test_simulate_null_with_the_demo_urls_fails_at_validation(tmp_path: Path) -> None:
    config = _demo_config()
    config["simulate"] = None
    result = _dry_run_with(tmp_path, config)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and "download.urls." in lines[0] and "simulate: is null" in lines[0]
