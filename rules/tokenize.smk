# Tokenization (cellfate.corpus): QC'd samples -> one median sketch per sample -> merged gene
# medians -> token dictionary -> rank-value tokens per sample (Hugging Face save_to_disk shards).
# Map-reduce: every per-sample job streams its file in row chunks; only tokenize_medians sees
# all samples, and it holds one genes x bins table. A failed sample reruns alone.

TOK = f"{RESULTS}/tokenize"


def tokenize_setting(key, default=None):
    """A key of the config's `tokenize:` block (defaults documented in config/schema.yaml)."""
    value = (config.get("tokenize") or {}).get(key)
    return default if value is None else value


def tokenize_version():
    return tokenize_setting("version", "v1")


def tokenize_medians_file():
    """The medians the tokenizer divides by: the corpus's own, or a pretrained model's."""
    return tokenize_setting("gene_medians") or f"{TOK}/gene_medians.tsv"


def tokenize_shards():
    return [f"{TOK}/shards/{source}/{sample}" for source, sample in all_samples()]


def tokenize_targets():
    """What `rule all` requests: every sample's shards and lengths, the summary and figures."""
    targets = tokenize_shards() + [
        f"{shard}.lengths.npy" for shard in tokenize_shards()
    ]
    targets += [
        f"{TOK}/summary.tsv",
        f"{TOK}/token_dictionary.json",
        f"{RESULTS}/figures/tokenize_lengths.png",
    ]
    if tokenize_setting("check_medians", SIMULATED):
        targets += [
            f"{TOK}/median_accuracy.tsv",
            f"{RESULTS}/figures/tokenize_median_accuracy.png",
        ]
    return targets


rule tokenize_sketch:
    input:
        h5ad=f"{RESULTS}/qc/{{source}}/{{sample}}.h5ad",
    output:
        f"{TOK}/sketches/{{source}}/{{sample}}.npz",
    log:
        f"{LOGS}/tokenize/sketches/{{source}}/{{sample}}.log",
    benchmark:
        f"{BENCH}/tokenize/sketches/{{source}}/{{sample}}.tsv"
    conda:
        "../envs/tokenize.yaml"
    params:
        chunk_size=tokenize_setting("chunk_size", 2048),
    script:
        "../workflow_scripts/tokenize_sketch.py"


rule tokenize_medians:
    input:
        sketches=[
            f"{TOK}/sketches/{source}/{sample}.npz" for source, sample in all_samples()
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
            "version": tokenize_version(),
            "gene_policy": tokenize_setting("gene_policy", "all_detected"),
            "biotype_table": tokenize_setting("biotype_table", "gencode"),
            "min_cells": tokenize_setting("min_cells", 1),
            "given": tokenize_setting("token_dictionary"),
        },
    script:
        "../workflow_scripts/tokenize_dictionary.py"


rule tokenize_sample:
    input:
        h5ad=f"{RESULTS}/qc/{{source}}/{{sample}}.h5ad",
        dictionary=f"{TOK}/token_dictionary.json",
        medians=tokenize_medians_file(),
    output:
        shards=directory(f"{TOK}/shards/{{source}}/{{sample}}"),
        lengths=f"{TOK}/shards/{{source}}/{{sample}}.lengths.npy",
        stats=f"{TOK}/shards/{{source}}/{{sample}}.stats.json",
    log:
        f"{LOGS}/tokenize/shards/{{source}}/{{sample}}.log",
    benchmark:
        f"{BENCH}/tokenize/shards/{{source}}/{{sample}}.tsv"
    wildcard_constraints:
        source="|".join(SOURCES),
        sample=r"[A-Za-z0-9][A-Za-z0-9_.-]*(?<!\.lengths\.npy)(?<!\.stats\.json)",
    conda:
        "../envs/tokenize.yaml"
    threads: tokenize_setting("threads", 2)
    resources:
        mem_mb=2000,
    params:
        settings=lambda wildcards: {
            "source": wildcards.source,
            "sample": wildcards.sample,
            "version": tokenize_version(),
            "max_length": tokenize_setting("max_length"),
            "cell_attributes": tokenize_setting(
                "cell_attributes", ["cell_type", "tissue", "source", "sample"]
            ),
            "chunk_size": tokenize_setting("chunk_size", 2048),
        },
    script:
        "../workflow_scripts/tokenize_sample.py"


rule tokenize_summary:
    input:
        stats=[f"{shard}.stats.json" for shard in tokenize_shards()],
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
        h5ads=qc_h5ads(),
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
        lengths=[f"{shard}.lengths.npy" for shard in tokenize_shards()],
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
        labels=[f"{source}/{sample}" for source, sample in all_samples()],
        max_length=tokenize_setting(
            "max_length", {"v1": 2048, "v2": 4096}[tokenize_version()]
        ),
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
