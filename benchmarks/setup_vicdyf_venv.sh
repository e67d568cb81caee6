#!/usr/bin/env bash
# The original vicdyf==0.0.8 in a venv of its own (benchmarks/.venv-vicdyf, git-ignored), for
# benchmarks/vicdyf_bench.py. Why a separate venv: vicdyf pulls scvelo, with which numpy 2 and
# zarr 3 break its import ("numpy.core.multiarray failed to import"); and torch is pinned to the
# CPU wheel on local disk (torch==2.13.0) so that pip does not fetch a multi-GB CUDA build.
# Only the original's side of benchmarks/vicdyf_bench.py runs in this venv (data pass as .npz).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VICDYF_VENV:-.venv-vicdyf}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "numpy<2" "zarr<3" "vicdyf==0.0.8"
"$VENV/bin/python" -c "import numpy, torch, vicdyf.workflow; print('vicdyf venv ok: numpy', numpy.__version__, 'torch', torch.__version__)"
