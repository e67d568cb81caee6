import os
import re
import sys

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def config_error(message):
    """Stop before any job with one line naming the file or key at fault (no traceback)."""
    sys.exit(f"error: {' '.join(str(message).split())}")


def validation_problem(err):
    """The jsonschema error inside Snakemake's WorkflowError, as 'key.path: problem'."""
    inner = err.__cause__ or err.__context__
    if not hasattr(inner, "absolute_path"):
        return str(err).splitlines()[0]
    where = ".".join(str(p) for p in inner.absolute_path)
    return f"{where}: {inner.message}" if where else inner.message


def validated(data, schema, where):
    """Validate against a schema; a failure is one line naming ``where`` and the key."""
    try:
        validate(data, schema=schema)
    except WorkflowError as err:
        row = (
            str(err).split("row ", 1)[1].split(" ", 1)[0]
            if "Error validating row" in str(err)
            else None
        )
        at = f" row {int(row) + 1}" if row else ""
        config_error(f"{where}{at}: {validation_problem(err)}")


validated(config, "../config/schema.yaml", "config")

RESULTS = config["results"]
SIM = f"{RESULTS}/simulated"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
SOURCES = ["panglaodb", "expression_atlas", "cellxgene"]
SIMULATED = bool(config.get("simulate"))
NUMERIC_COLUMNS = ("sim_n_cells", "sim_n_duplicates")

if not SIMULATED:
    for _key, _url in config["download"]["urls"].items():
        if "{simulated}" in _url:
            config_error(
                f"config: download.urls.{_key} points at the demo's simulated sources ({{simulated}}) but "
                "simulate: is null; give the real URLs (config/paper.yaml) or keep the simulate: block"
            )


def read_sample_sheet(source):
    """The source's sample sheet, validated row by row against its schema, indexed by sample_id."""
    path = config["samples"][source]
    if not os.path.isfile(path):
        config_error(
            f"{path}: the {source} sample sheet does not exist (config samples.{source})"
        )
    try:
        sheet = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, comment="#"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        config_error(f"{path}: not a readable tab-separated sample sheet ({err})")
    for column in NUMERIC_COLUMNS:
        if column in sheet:
            values = pd.to_numeric(sheet[column].replace("", "0"), errors="coerce")
            if values.isna().any():
                bad = sheet[column][values.isna()].iloc[0]
                config_error(f"{path}: column {column} holds {bad!r}, not a number")
            sheet[column] = values
    validated(sheet, f"../config/schema.samples.{source}.yaml", path)
    if sheet["sample_id"].duplicated().any():
        dup = sheet["sample_id"][sheet["sample_id"].duplicated()].iloc[0]
        config_error(f"{path}: sample_id {dup!r} appears twice")
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


# The demo's simulated lineage in the pretraining corpus (simulate.lineage_corpus_cells; 0: not):
# one more tokenized sample, "lineage/bifurcation", in the medians, dictionary and pretraining
# shards, but not in the classifier's or the kNN's cells (its cell types are not the corpus').
LINEAGE_CORPUS_CELLS = int(
    (config.get("simulate") or {}).get("lineage_corpus_cells") or 0
)
LINEAGE_SAMPLES = [("lineage", "bifurcation")] if LINEAGE_CORPUS_CELLS else []


def tokenize_samples():
    """(source, sample_id) of every tokenized sample: the corpus and the lineage cells."""
    return all_samples() + LINEAGE_SAMPLES


def corpus_h5ad(wildcards):
    """The cells that tokenization reads for one sample: QC'd, or the simulated lineage's."""
    if wildcards.source == "lineage":
        return f"{SIM}/lineage/{wildcards.sample}.h5ad"
    return f"{RESULTS}/qc/{wildcards.source}/{wildcards.sample}.h5ad"


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


def synonyms_input(species):
    """The species' downloaded gene synonym table, or nothing when download.urls has no URL for it."""
    if config["download"]["urls"].get(f"gene_synonyms_{species}"):
        return f"{RESULTS}/downloads/genes/{species}_synonyms.tsv"
    return []


def is_unpacked_archive(path, url):
    """A download.files entry whose .tar.gz is unpacked as the folder `path`."""
    return url.endswith((".tar.gz", ".tgz")) and not path.endswith((".tar.gz", ".tgz"))


# Any other input the config names (a velocity h5ad, a Space Ranger folder...) can be listed
# under download.files as path: URL; a .tar.gz URL for a path that is not one is unpacked there.
DOWNLOAD_FILES = config["download"].get("files") or {}


def listed_paths(archives):
    """A wildcard pattern matching exactly the listed paths of one kind (never anything else)."""
    paths = [
        path
        for path, url in DOWNLOAD_FILES.items()
        if is_unpacked_archive(path, url) == archives
    ]
    return "|".join(re.escape(path) for path in paths) or "(?!)"


def spatial_input_files(wildcards):
    """Rule spatial_input (SPATIAL_GIVEN: rules/spatial.smk): the given sections; a Space Ranger folder not yet there as the files download.files makes."""
    given = SPATIAL_GIVEN[wildcards.what]
    files = []
    for path in given.values() if isinstance(given, dict) else [given]:
        if str(path).endswith(".h5ad") or os.path.isdir(path):
            files.append(path)
        else:
            files += [f"{path}/filtered_feature_bc_matrix.h5", f"{path}/spatial"]
    return files


def download_params():
    """Retry and manifest settings shared by every download rule."""
    cfg = config["download"]
    return dict(
        manifest_dir=cfg.get("manifest_dir") or f"{RESULTS}/manifests",
        retries=cfg["retries"],
        timeout=cfg["timeout_s"],
        backoff=cfg.get("backoff_s", 2),
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
    """BAM + GTF (or a loom, or an h5ad), barcodes, optional repeat mask and QC'd cells of one sample."""
    if SIMULATED and name == "bifurcation":
        folder = f"{SIM}/bifurcation"
        return {
            "bam": f"{folder}/possorted_genome_bam.bam",
            "gtf": f"{folder}/genes.gtf",
            "barcodes": f"{folder}/barcodes.tsv",
            "cells": f"{folder}/truth.h5ad",
        }
    return dict(config["velocity"]["samples"][name])


def velocity_counts_kind(name):
    """How a sample's spliced/unspliced counts come: loom, h5ad, STARsolo folder, or velocyto on its BAM."""
    sample = velocity_sample(name)
    return next(
        (key for key in ("loom", "h5ad", "starsolo") if sample.get(key)), "velocyto"
    )


def velocity_counts_input(wildcards):
    """The sample's loom, layered h5ad or STARsolo folder as given, else velocyto's output folder."""
    kind = velocity_counts_kind(wildcards.name)
    if kind == "velocyto":
        return f"{RESULTS}/velocity/{wildcards.name}/velocyto"
    return velocity_sample(wildcards.name)[kind]


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


def spatial_params(*parts):
    """The shared keys and the named parts of the spatial block: a job reruns only when they change."""
    spatial = config.get("spatial") or {}
    keys = ("cell_type_key", "seed") + parts
    return canonical({key: spatial[key] for key in keys if key in spatial})


# --- memory per job from the input's size, growing with the attempt ---
# DeepCOLOR: see mem_deepcolor. VICDYF: see vicdyf_fit_mem_mb.
MEM_UNKNOWN_MB = 8000  # an input that does not exist yet (dry run) or cannot be read


def h5ad_shape(path):
    """(rows, columns) of an h5ad from its obs and var indexes, without loading it; None if unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            obs, var = handle["obs"], handle["var"]
            return (
                int(obs[obs.attrs.get("_index", "_index")].shape[0]),
                int(var[var.attrs.get("_index", "_index")].shape[0]),
            )
    except (OSError, KeyError, TypeError, ValueError):
        return None


def vicdyf_fit_mem_mb(wildcards, input, attempt):
    """Memory for vicdyf_fit from its input's shape, 50% more per attempt.

    Measured (benchmarks/README.md, VICDYF memory, 2026-12-08): 47 MB per 1,000 cells at 2,000
    genes (24 bytes per cell x gene), 5,326 MiB (5.6 GB) at 100k x 2,000; asked: 24 bytes per
    cell x modelled gene, 8 per cell x input gene (the input's two int32 layers), 1 GB of
    libraries: 7.4 GB at 100k x 2,000 on the first try.
    """
    shape = h5ad_shape(input[0])
    if shape is None:
        return MEM_UNKNOWN_MB * attempt
    cells, genes = shape
    modelled = min(genes, int(DYNAMICS.get("n_top_genes", 2000)))
    need = 1000 + cells * (24 * modelled + 8 * genes) / 1e6
    return int(need * (1 + 0.5 * (attempt - 1)))


def mem_deepcolor(wildcards, input, attempt):
    """Memory for the DeepCOLOR jobs from the inputs' shapes, 50% more per attempt.

    The rule holds no cells x spots array (p_mat is written a block of 4,096 cells at a time), so
    memory grows with cells x genes (dense counts, their count-table codes, the read h5ad) and
    spots x genes, plus block-sized cells x spots temporaries. Measured (benchmarks/README.md,
    DeepCOLOR memory): 1.6 GB peak at 50k cells x 10k spots x 765 genes; asked: 1 GB of libraries,
    16 bytes per cell x gene and per spot x gene, 24 per spot for a block of 4,096 cells: 2.7 GB there.
    """
    reference, spots = h5ad_shape(input.reference), h5ad_shape(input.spots)
    if reference is None or spots is None:
        return MEM_UNKNOWN_MB * attempt
    genes = min(reference[1], spots[1])
    need = 1000 + (16 * genes * (reference[0] + spots[0]) + 24 * 4096 * spots[0]) / 1e6
    return int(need * (1 + 0.5 * (attempt - 1)))


def env_source(wildcards):
    """The inputs of one environment analysis (the demo's simulated tissues, else the main run)."""
    if SIMULATED:
        run = f"{SP}/{wildcards.envrun}"
        return {
            "cells": f"{run}/deepcolor.h5ad",
            "p_mat": f"{run}/p_mat.npy",
            "ligand_target": f"{SIM}/{wildcards.envrun}/ligand_target.tsv",
            "spots": f"{SIM}/{wildcards.envrun}/spots.h5ad",
        }
    return ENV_SOURCE


def env_sim_params(wildcards):
    """The environment tissue's settings; the negative control switches the driver's effect off."""
    sim = dict(sim_params("environment"))
    if wildcards.envrun == "environment_negative":
        sim["environment"] = {**sim["environment"], "fate_gain": 0.0, "speed_gain": 0.0}
    return canonical(sim)
