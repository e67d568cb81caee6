# cellfate: public mouse single-cell data -> foundation model, cell-state dynamics, tissue maps.
# This file is the table of contents: the stages live in rules/, the logic in src/cellfate/.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# Rule scripts import cellfate from this checkout. The per-stage conda envs (envs/) do not install
# it: Snakemake appends its own sys.path to every script job's (that is how `snakemake` itself is
# found there, cluster jobs included), so src/ is found after the env's packages. In the Makefile's
# .venv the editable install points at the same folder.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/download.smk"
include: "rules/qc.smk"
include: "rules/figures.smk"
include: "rules/tokenize.smk"
include: "rules/pretrain.smk"
include: "rules/foundation.smk"
include: "rules/velocity.smk"
include: "rules/dynamics.smk"
include: "rules/spatial.smk"
include: "rules/fate_screen.smk"


# Every result of the run: each stage's targets (empty for a stage the config turns off).
TARGETS = [
    *simulated_targets(),
    f"{RESULTS}/qc/corpus_summary.tsv",
    f"{RESULTS}/figures/qc_metrics.png",
    f"{RESULTS}/figures/corpus_summary.png",
    *TOKENIZE_TARGETS,
    *PRETRAIN_TARGETS,
    *FOUNDATION_TARGETS,
    *dynamics_targets(),
    *SPATIAL_TARGETS,
    *FATE_SCREEN_TARGETS,
]


rule all:
    default_target: True
    input:
        TARGETS,


# The paper's figures only (and whatever they need): `snakemake figures`.
rule figures:
    input:
        [target for target in TARGETS if str(target).endswith(".png")],
