#!/usr/bin/env bash
# CellRank 2 (PyPI cellrank 2.0.7: the last release for Python 3.11; BSD-3) in its own venv for benchmarks/vicdyf_drivers_bench.py: it
# pulls scvelo and its own numba/scanpy stack, which must not enter the project's venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv-cellrank"
"$here/.venv-cellrank/bin/pip" install -q --upgrade pip
"$here/.venv-cellrank/bin/pip" install -q "cellrank==2.0.7" "numpy==2.2.6"  # 2.0.7 calls assert_array_equal(x=...), gone in numpy 2.4
"$here/.venv-cellrank/bin/python" -c "import cellrank; print('cellrank', cellrank.__version__)"
