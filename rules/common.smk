import os

import pandas as pd
from snakemake.utils import validate

validate(config, schema="../config/schema.yaml")

RESULTS = config["results"]
SIM = f"{RESULTS}/simulated"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
SOURCES = ["panglaodb", "expression_atlas", "cellxgene"]
SIMULATED = bool(config.get("simulate"))


def read_sample_sheet(source):
    """The source's sample sheet, validated row by row, indexed by sample_id."""
    path = config["samples"][source]
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    for column in ("sim_n_cells", "sim_n_duplicates"):
        if column in sheet:
            sheet[column] = pd.to_numeric(sheet[column].replace("", "0"))
    validate(sheet, schema="../config/schema.samples.yaml")
    if sheet["sample_id"].duplicated().any():
        dup = sheet["sample_id"][sheet["sample_id"].duplicated()].iloc[0]
        raise ValueError(f"{path}: sample_id {dup!r} appears twice")
    return sheet.set_index("sample_id", drop=False)


SAMPLES = {source: read_sample_sheet(source) for source in SOURCES}


def sample_row(source, sample):
    """One sample-sheet row as a plain dict (for params)."""
    return SAMPLES[source].loc[sample].to_dict()


def sample_ids(source):
    return list(SAMPLES[source].index)


def simulated_targets():
    """Every simulated input of the demo, with its overview figures."""
    if not SIMULATED:
        return []
    return [
        expand(
            f"{SIM}/sources/panglaodb/{{sample}}.sparse.RData",
            sample=sample_ids("panglaodb"),
        ),
        f"{SIM}/sources/panglaodb/metadata.txt",
        expand(
            f"{SIM}/sources/expression_atlas/{{sample}}-quantification-raw-files.zip",
            sample=sample_ids("expression_atlas"),
        ),
        expand(
            f"{SIM}/sources/cellxgene/{{sample}}.h5ad", sample=sample_ids("cellxgene")
        ),
        f"{SIM}/bifurcation/possorted_genome_bam.bam",
        f"{SIM}/tissue/spots.h5ad",
        f"{RESULTS}/figures/simulated_corpus.png",
        f"{RESULTS}/figures/simulated_bifurcation.png",
        f"{RESULTS}/figures/simulated_tissue.png",
    ]


wildcard_constraints:
    sample=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def donor_row(sample):
    """The sample whose cells a simulated CELLxGENE dataset re-hosts, if any."""
    donor = sample_row("cellxgene", sample).get("sim_duplicates_from", "")
    for source in SOURCES:
        if donor and donor in SAMPLES[source].index:
            return sample_row(source, donor)
    return None


def all_samples():
    """(source, sample_id) of every sample of every source, in sheet order."""
    return [(source, sample) for source in SOURCES for sample in sample_ids(source)]


def qc_h5ads():
    """The QC'd AnnData of every sample: the corpus that tokenization reads."""
    return [f"{RESULTS}/qc/{source}/{sample}.h5ad" for source, sample in all_samples()]


def source_url(key, source=None, sample=None, simulated=None):
    """A download URL from the config template, filled with the sample's sheet columns.

    `{simulated}` stands for the absolute path of the demo's simulated sources.
    """
    fields = dict(sample_row(source, sample)) if sample else {}
    return config["download"]["urls"][key].format(
        sample=sample, simulated=simulated or os.path.abspath(SIM), **fields
    )


def local_source(key, source=None, sample=None):
    """The simulated file behind a demo file:// URL, as its rule declares it, else nothing.

    This makes the demo's download jobs wait for the simulators.
    """
    url = source_url(key, source, sample, simulated=SIM)
    return [url.removeprefix("file://")] if url.startswith(f"file://{SIM}/") else []


def download_params():
    """Retry and manifest settings shared by every download rule."""
    cfg = config["download"]
    return dict(
        manifest_dir=cfg.get("manifest_dir") or f"{RESULTS}/manifests",
        retries=cfg["retries"],
        timeout=cfg["timeout_s"],
    )


def canonical(value):
    """A config value with dict keys sorted at every level.

    Snakemake compares params by their text, so the same settings written in another key order
    would otherwise rerun a job.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def sim_params(part):
    """The seed and one part of the simulate block: a job reruns only when its part changes."""
    sim = config.get("simulate") or {}
    return canonical({"seed": sim.get("seed"), part: sim.get(part, {})})


# --- velocity and dynamics stages (rules/velocity.smk, rules/dynamics.smk) ---
DYNAMICS = config.get("dynamics") or {}
DYN = f"{RESULTS}/dynamics"


def velocity_names():
    """Every sample whose spliced/unspliced counts the workflow makes."""
    names = ["bifurcation"] if SIMULATED else []
    return names + list((config.get("velocity") or {}).get("samples") or {})


def velocity_sample(name):
    """BAM, GTF, barcodes, optional repeat mask and QC'd cells of one sample."""
    if SIMULATED and name == "bifurcation":
        folder = f"{SIM}/bifurcation"
        return {
            "bam": f"{folder}/possorted_genome_bam.bam",
            "gtf": f"{folder}/genes.gtf",
            "barcodes": f"{folder}/barcodes.tsv",
            "cells": f"{folder}/truth.h5ad",
        }
    return dict(config["velocity"]["samples"][name])


def velocyto_inputs(wildcards):
    sample = velocity_sample(wildcards.name)
    files = {key: sample[key] for key in ("bam", "gtf") if sample.get(key)}
    for key in ("barcodes", "mask"):
        if sample.get(key):
            files[key] = sample[key]
    return files


def dynamics_targets():
    """Every result and figure of the dynamics stage, for the `all` rule."""
    targets = []
    for name in velocity_names():
        targets += [
            f"{DYN}/{name}.h5ad",
            f"{RESULTS}/figures/{name}/vicdyf_velocity.png",
        ]
        if DYNAMICS.get("fate_key") and DYNAMICS.get("fates"):
            targets += [
                f"{RESULTS}/figures/{name}/vicdyf_fluctuation.png",
                f"{RESULTS}/figures/{name}/vicdyf_fluctuation_genes.png",
            ]
    if SIMULATED and DYNAMICS.get("fate_key") and DYNAMICS.get("fates"):
        targets.append(f"{RESULTS}/figures/bifurcation/vicdyf_validation.png")
    if SIMULATED and DYNAMICS.get("crosscheck"):
        targets.append(f"{RESULTS}/figures/vicdyf_crosscheck.png")
    return targets


def vicdyf_fit_mem_mb(wildcards, input, attempt):
    """Memory for vicdyf_fit from its input's shape (read from the h5ad header), more per attempt.

    Measured (benchmarks/README.md, VICDYF memory): 68 MB per 1,000 cells at 2,000 genes, i.e. 34
    bytes per cell x gene; asked: 40 per cell x modelled gene, 8 per cell x input gene (the
    input's two int32 layers), 1 GB of libraries: 10.6 GB at 100k x 2,000 (measured 7.2).
    """
    import h5py

    try:
        with h5py.File(input[0], "r") as handle:
            index = handle["obs"].attrs.get("_index", "_index")
            cells = len(handle["obs"][index])
            genes = len(handle["var"][handle["var"].attrs.get("_index", "_index")])
    except (OSError, KeyError):
        return 8000 * attempt
    modelled = min(genes, int(DYNAMICS.get("n_top_genes", 2000)))
    need = 1000 + cells * (40 * modelled + 8 * genes) / 1e6
    return int(need * (1 + 0.5 * (attempt - 1)))


def spatial_params(*parts):
    """The shared keys and the named parts of the spatial block: a job reruns only when they change."""
    spatial = config.get("spatial") or {}
    keys = ("cell_type_key", "seed") + parts
    return canonical({key: spatial[key] for key in keys if key in spatial})
