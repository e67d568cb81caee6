#!/usr/bin/env bash
# Builds benchmarks/.venv-deepcolor: the original deepcolor==0.0.6 from PyPI, isolated from the
# project's .venv, for benchmarks/deepcolor_bench.py.
#
# Why these pins: deepcolor 0.0.6 does not import under numpy 2 ("numpy.core.multiarray failed
# to import") and its anndata/scanpy chain needs zarr<3; torch==2.13.0 is the CPU wheel on this
# machine's disk (pip's find-links), pinned so that pip never fetches a multi-GB CUDA build.
# matplotlib<=3.6.3 is deepcolor's own requirement. Idempotent: a finished venv is reused.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-deepcolor
PYTHON=${PYTHON:-python3.11}
if [ -f "$VENV/.installed" ]; then
    echo "$VENV is ready"
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "numpy<2" "zarr<3" "deepcolor==0.0.6"
"$VENV/bin/python" -c "import deepcolor.workflow, numpy, torch; print('deepcolor ready: numpy', numpy.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
