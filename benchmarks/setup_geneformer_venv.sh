#!/usr/bin/env bash
# A venv for Geneformer's own code (benchmarks/.venv-geneformer, git-ignored), used by
# benchmarks/tokenize_bench.py and benchmarks/geneformer_parity_bench.py. Geneformer is not on
# PyPI: the benchmarks import it from a local checkout of its public repository (Apache-2.0),
# given with --geneformer PATH; this script installs only its PyPI dependencies. Geneformer pins
# transformers==4.46; torch is the CPU wheel on local disk (torch==2.13.0), so that pip does not
# fetch a multi-GB CUDA build. Its package __init__ pulls every module (ray, optuna, bitsandbytes
# ...); the benchmarks load the modules they use (tokenizer, emb_extractor, in_silico_perturber,
# perturber_utils) without it, so those heavier dependencies are left out.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${GENEFORMER_VENV:-.venv-geneformer}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "transformers==4.46.3" "peft==0.13.2" "accelerate==1.1.1" \
    "numpy<2.5" "anndata" "scanpy" "loompy" "datasets" "pyarrow" "tdigest" "seaborn" "matplotlib" "tqdm" "multiprocess" \
    "scikit-learn" "statsmodels"
"$VENV/bin/python" -c "import torch, transformers, peft, datasets, loompy, tdigest; print('geneformer venv ok: torch', torch.__version__, 'transformers', transformers.__version__)"
