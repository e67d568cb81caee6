# Tokenization (cellfate.corpus): QC'd samples -> exact gene medians in two map-reduce passes
# (a histogram sketch per sample -> merged median bins -> the values inside those bins per sample
# -> exact medians) -> token dictionary -> rank-value tokens per sample (save_to_disk shards).
# Every per-sample job streams its file in row chunks; only tokenize_median_bins and
# tokenize_medians see all samples (one genes x bins table; the values of one bin per gene).
# A failed sample reruns alone.

TOK = f"{RESULTS}/tokenize"
# The `tokenize:` config block over its defaults (documented in config/schema.yaml).
TOKENIZE = {
    "version": "v1",
    "max_length": None,  # v1: 2048 genes; v2: 4096 tokens with <cls> and <eos>
    "gene_policy": "all_detected",
    "biotype_table": "gencode",
    "min_cells": 1,
    "chunk_size": 1024,
    "threads": 2,
    "cell_attributes": ["cell_type", "tissue", "source", "sample"],
    "token_dictionary": None,
    "gene_medians": None,
    "gene_mapping": None,
    "check_medians": SIMULATED,
} | {k: v for k, v in (config.get("tokenize") or {}).items() if v is not None}
# A pretrained model (foundation.pretrained_model) is usable only with its own dictionary and
# medians: a folder we saved holds both, and they are taken from it unless given explicitly; a
# published checkpoint's pickles must be named (tokenize.token_dictionary, tokenize.gene_medians).
PRETRAINED_SOURCE = (config.get("foundation") or {}).get("pretrained_model")
if PRETRAINED_SOURCE:
    for key, name in (
        ("token_dictionary", "token_dictionary.json"),
        ("gene_medians", "gene_medians.tsv"),
    ):
        beside = os.path.join(PRETRAINED_SOURCE, name)
        if not TOKENIZE[key] and os.path.isfile(beside):
            TOKENIZE[key] = beside
        if not TOKENIZE[key]:
            raise ValueError(
                f"foundation.pretrained_model {PRETRAINED_SOURCE} has no {name}: set "
                f"tokenize.{key} to the file published with the checkpoint"
            )
TOKENIZE_MAX_LENGTH = (
    TOKENIZE["max_length"] or {"v1": 2048, "v2": 4096}[TOKENIZE["version"]]
)
TOKENIZE_SHARDS = [
    f"{TOK}/shards/{source}/{sample}" for source, sample in tokenize_samples()
]
# What `rule all` requests: every sample's shards and lengths, the summary and figures.
TOKENIZE_TARGETS = (
    TOKENIZE_SHARDS
    + [f"{shard}.lengths.npy" for shard in TOKENIZE_SHARDS]
    + [
        f"{TOK}/summary.tsv",
        f"{TOK}/token_dictionary.json",
        f"{RESULTS}/figures/tokenize_lengths.png",
    ]
    + (
        [
            f"{TOK}/median_accuracy.tsv",
            f"{RESULTS}/figures/tokenize_median_accuracy.png",
        ]
        if TOKENIZE["check_medians"]
        else []
    )
)


rule tokenize_sketch:
    input:
        h5ad=corpus_h5ad,
    output:
        f"{TOK}/sketches/{{source}}/{{sample}}.npz",
    log:
        f"{LOGS}/tokenize/sketches/{{source}}/{{sample}}.log",
    benchmark:
        f"{BENCH}/tokenize/sketches/{{source}}/{{sample}}.tsv"
    conda:
        "../envs/tokenize.yaml"
    params:
        chunk_size=TOKENIZE["chunk_size"],
    script:
        "../workflow_scripts/tokenize_sketch.py"


rule tokenize_median_bins:
    input:
        sketches=[
            f"{TOK}/sketches/{source}/{sample}.npz"
            for source, sample in tokenize_samples()
        ],
    output:
        f"{TOK}/median_bins.npz",
    log:
        f"{LOGS}/tokenize/median_bins.log",
    benchmark:
        f"{BENCH}/tokenize/median_bins.tsv"
    conda:
        "../envs/tokenize.yaml"
    resources:
        mem_mb=2000,
    script:
        "../workflow_scripts/tokenize_median_bins.py"


rule tokenize_median_values:
    input:
        h5ad=corpus_h5ad,
        bins=f"{TOK}/median_bins.npz",
    output:
        f"{TOK}/median_values/{{source}}/{{sample}}.npz",
    log:
        f"{LOGS}/tokenize/median_values/{{source}}/{{sample}}.log",
    benchmark:
        f"{BENCH}/tokenize/median_values/{{source}}/{{sample}}.tsv"
    conda:
        "../envs/tokenize.yaml"
    params:
        chunk_size=TOKENIZE["chunk_size"],
    script:
        "../workflow_scripts/tokenize_median_values.py"


rule tokenize_medians:
    input:
        bins=f"{TOK}/median_bins.npz",
        values=[
            f"{TOK}/median_values/{source}/{sample}.npz"
            for source, sample in tokenize_samples()
        ],
    output:
        f"{TOK}/gene_medians.tsv",
    log:
        f"{LOGS}/tokenize/medians.log",
    benchmark:
        f"{BENCH}/tokenize/medians.tsv"
    conda:
        "../envs/tokenize.yaml"
    resources:
        mem_mb=2000,
    script:
        "../workflow_scripts/tokenize_medians.py"


rule tokenize_dictionary:
    input:
        medians=f"{TOK}/gene_medians.tsv",
    output:
        f"{TOK}/token_dictionary.json",
    log:
        f"{LOGS}/tokenize/dictionary.log",
    benchmark:
        f"{BENCH}/tokenize/dictionary.tsv"
    conda:
        "../envs/tokenize.yaml"
    params:
        settings={
            "version": TOKENIZE["version"],
            "gene_policy": TOKENIZE["gene_policy"],
            "biotype_table": TOKENIZE["biotype_table"],
            "min_cells": TOKENIZE["min_cells"],
            "given": TOKENIZE["token_dictionary"],
        },
    script:
        "../workflow_scripts/tokenize_dictionary.py"


rule tokenize_sample:
    input:
        h5ad=corpus_h5ad,
        dictionary=f"{TOK}/token_dictionary.json",
        # the medians the tokenizer divides by: the corpus's own, or a pretrained model's
        medians=TOKENIZE["gene_medians"] or f"{TOK}/gene_medians.tsv",
    output:
        shards=directory(f"{TOK}/shards/{{source}}/{{sample}}"),
        lengths=f"{TOK}/shards/{{source}}/{{sample}}.lengths.npy",
        stats=f"{TOK}/shards/{{source}}/{{sample}}.stats.json",
    log:
        f"{LOGS}/tokenize/shards/{{source}}/{{sample}}.log",
    benchmark:
        f"{BENCH}/tokenize/shards/{{source}}/{{sample}}.tsv"
    wildcard_constraints:
        source="|".join(SOURCES + [s for s, _ in LINEAGE_SAMPLES]),
        sample=r"[A-Za-z0-9][A-Za-z0-9_.-]*(?<!\.lengths\.npy)(?<!\.stats\.json)",
    conda:
        "../envs/tokenize.yaml"
    threads: TOKENIZE["threads"]
    resources:
        mem_mb=2000,
    params:
        settings=lambda wildcards: {
            "source": wildcards.source,
            "sample": wildcards.sample,
            "version": TOKENIZE["version"],
            "max_length": TOKENIZE_MAX_LENGTH,
            "cell_attributes": TOKENIZE["cell_attributes"],
            "chunk_size": TOKENIZE["chunk_size"],
        },
    script:
        "../workflow_scripts/tokenize_sample.py"


rule tokenize_summary:
    input:
        stats=[f"{shard}.stats.json" for shard in TOKENIZE_SHARDS],
    output:
        f"{TOK}/summary.tsv",
    log:
        f"{LOGS}/tokenize/summary.log",
    benchmark:
        f"{BENCH}/tokenize/summary.tsv"
    conda:
        "../envs/tokenize.yaml"
    script:
        "../workflow_scripts/tokenize_summary.py"


rule tokenize_median_accuracy:
    input:
        h5ads=qc_h5ads() + [f"{SIM}/lineage/{x}.h5ad" for _, x in LINEAGE_SAMPLES],
        medians=f"{TOK}/gene_medians.tsv",
    output:
        f"{TOK}/median_accuracy.tsv",
    log:
        f"{LOGS}/tokenize/median_accuracy.log",
    benchmark:
        f"{BENCH}/tokenize/median_accuracy.tsv"
    conda:
        "../envs/tokenize.yaml"
    params:
        min_cells=100,
    script:
        "../workflow_scripts/tokenize_median_accuracy.py"


rule figure_tokenize_lengths:
    input:
        lengths=[f"{shard}.lengths.npy" for shard in TOKENIZE_SHARDS],
    output:
        report(
            f"{RESULTS}/figures/tokenize_lengths.png",
            caption="../report/tokenize_lengths.rst",
            category="Tokenization",
        ),
    log:
        f"{LOGS}/figures/tokenize_lengths.log",
    benchmark:
        f"{BENCH}/figures/tokenize_lengths.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        labels=[f"{source}/{sample}" for source, sample in tokenize_samples()],
        max_length=TOKENIZE_MAX_LENGTH,
    script:
        "../workflow_scripts/figure_tokenize_lengths.py"


rule figure_tokenize_median_accuracy:
    input:
        table=f"{TOK}/median_accuracy.tsv",
    output:
        report(
            f"{RESULTS}/figures/tokenize_median_accuracy.png",
            caption="../report/tokenize_median_accuracy.rst",
            category="Tokenization",
        ),
    log:
        f"{LOGS}/figures/tokenize_median_accuracy.log",
    benchmark:
        f"{BENCH}/figures/tokenize_median_accuracy.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_tokenize_median_accuracy.py"
