# Using the foundation model (cellfate.foundation): a fine-tuned cell-type classifier measured
# against a baseline and a zero-shot kNN, cell embeddings with a UMAP, batched in silico
# perturbation screens, and human samples brought in through one-to-one orthologs (then the
# ordinary QC and tokenization). Needs rules/tokenize.smk (TOK, TOKENIZE) and the
# pretrained model of rules/pretrain.smk.

FOUNDATION = config.get("foundation") or {}
FM = f"{RESULTS}/foundation"
# The model every job starts from: ours (rules/pretrain.smk), or foundation.pretrained_model
# (a Hugging Face BertForMaskedLM folder) imported with its dictionary and medians.
PRETRAINED = (
    f"{RESULTS}/pretrained/model" if PRETRAINED_SOURCE else f"{RESULTS}/pretrain/model"
)
CROSS = "cross_species"
# auto: the GPU when PyTorch sees one, else the CPU
FOUNDATION_DEVICE = FOUNDATION.get("device", "auto")
FOUNDATION_THREADS = FOUNDATION.get("threads", 2)
# gpu=N for the Slurm plugin (0 on the demo); the jobs use a GPU whenever one is visible.
FOUNDATION_RESOURCES = {
    "gpu": FOUNDATION.get("gpus", 0),
    "mem_mb": FOUNDATION.get("mem_mb", 8000),
}
# Each model job's settings: its sub-block over the shared device and token cut (a block's own
# `max_tokens: null` inherits the shared one); canonical, so key order never reruns a job.
FOUNDATION_SETTINGS = {
    name: canonical(
        {"device": FOUNDATION_DEVICE, "max_tokens": FOUNDATION.get("max_tokens")}
        | {
            k: v
            for k, v in (FOUNDATION.get(name) or {}).items()
            if k != "experiments" and not (k == "max_tokens" and v is None)
        }
    )
    for name in ("classify", "embed", "perturb")
}
CORPUS_SHARDS = [f"{TOK}/shards/{source}/{sample}" for source, sample in all_samples()]
PERTURB_EXPERIMENTS = dict((FOUNDATION.get("perturb") or {}).get("experiments") or {})
# name -> {path, tissue, cell_type_column} of every human sample to bring in
CROSS_SAMPLES = dict((FOUNDATION.get(CROSS) or {}).get("samples") or {})
# The human sample's h5ad; `{simulated}` stands for the demo's simulated inputs folder.
cross_species_path = lambda wildcards: CROSS_SAMPLES[wildcards.sample]["path"].format(
    simulated=SIM
)
# A screen perturbs the pretrained model, or the fine-tuned classifier when it says so.
perturb_model = lambda wildcards: (
    f"{FM}/classifier/model"
    if PERTURB_EXPERIMENTS[wildcards.name].get("model") == "classifier"
    else PRETRAINED
)
# What `rule all` requests from this stage (nothing when the config has no foundation block).
FOUNDATION_TARGETS = (
    (
        [
            f"{FM}/classifier/metrics.tsv",
            f"{FM}/embeddings.h5ad",
            f"{RESULTS}/figures/classifier_confusion.png",
            f"{RESULTS}/figures/embedding_umap.png",
        ]
        + [f"{FM}/perturbation/{name}.tsv" for name in PERTURB_EXPERIMENTS]
        + (
            [f"{RESULTS}/figures/perturbation_top_genes.png"]
            if PERTURB_EXPERIMENTS
            else []
        )
        + (
            [f"{FM}/cross_species/summary.tsv", f"{RESULTS}/figures/cross_species.png"]
            if CROSS_SAMPLES
            else []
        )
    )
    if FOUNDATION
    else []
)


rule import_pretrained:
    input:
        source=PRETRAINED_SOURCE or [],
        dictionary=f"{TOK}/token_dictionary.json",
        medians=TOKENIZE["gene_medians"] or [],
    output:
        directory(f"{RESULTS}/pretrained/model"),
    log:
        f"{LOGS}/foundation/import_pretrained.log",
    benchmark:
        f"{BENCH}/foundation/import_pretrained.tsv"
    conda:
        "../envs/foundation.yaml"
    resources:
        mem_mb=2000,
    params:
        max_length=TOKENIZE_MAX_LENGTH,
        gene_mapping=TOKENIZE["gene_mapping"],
    script:
        "../workflow_scripts/import_pretrained.py"


rule classify_cells:
    input:
        model=PRETRAINED,
        dictionary=f"{TOK}/token_dictionary.json",
        shards=CORPUS_SHARDS,
        lengths=[f"{shard}.lengths.npy" for shard in CORPUS_SHARDS],
        qc=qc_h5ads(),
    output:
        model=directory(f"{FM}/classifier/model"),
        metrics=f"{FM}/classifier/metrics.tsv",
        predictions=f"{FM}/classifier/predictions.tsv",
    log:
        f"{LOGS}/foundation/classify_cells.log",
    benchmark:
        f"{BENCH}/foundation/classify_cells.tsv"
    conda:
        "../envs/foundation.yaml"
    threads: FOUNDATION_THREADS
    resources:
        **FOUNDATION_RESOURCES,
    params:
        settings=FOUNDATION_SETTINGS["classify"],
    script:
        "../workflow_scripts/classify_cells.py"


rule embed_cells:
    input:
        model=PRETRAINED,
        dictionary=f"{TOK}/token_dictionary.json",
        shards=CORPUS_SHARDS,
        lengths=[f"{shard}.lengths.npy" for shard in CORPUS_SHARDS],
    output:
        f"{FM}/embeddings.h5ad",
    log:
        f"{LOGS}/foundation/embed_cells.log",
    benchmark:
        f"{BENCH}/foundation/embed_cells.tsv"
    conda:
        "../envs/foundation.yaml"
    threads: FOUNDATION_THREADS
    resources:
        **FOUNDATION_RESOURCES,
    params:
        settings=FOUNDATION_SETTINGS["embed"],
    script:
        "../workflow_scripts/embed_cells.py"


rule perturb_screen:
    input:
        model=perturb_model,
        dictionary=f"{TOK}/token_dictionary.json",
        shards=CORPUS_SHARDS,
        lengths=[f"{shard}.lengths.npy" for shard in CORPUS_SHARDS],
    output:
        table=f"{FM}/perturbation/{{name}}.tsv",
        gene_shifts=f"{FM}/perturbation/{{name}}.gene_shifts.tsv",
    log:
        f"{LOGS}/foundation/perturbation/{{name}}.log",
    benchmark:
        f"{BENCH}/foundation/perturbation/{{name}}.tsv"
    wildcard_constraints:
        name="|".join(PERTURB_EXPERIMENTS) or "(?!)",
    conda:
        "../envs/foundation.yaml"
    threads: FOUNDATION_THREADS
    resources:
        **FOUNDATION_RESOURCES,
    params:
        experiment=lambda wildcards: canonical(PERTURB_EXPERIMENTS[wildcards.name]),
        settings=FOUNDATION_SETTINGS["perturb"],
    script:
        "../workflow_scripts/perturb_screen.py"


rule simulate_human_sample:
    output:
        h5ad=f"{SIM}/human/{{sample}}.h5ad",
        truth=f"{SIM}/truth/human/{{sample}}.tsv",
    log:
        f"{LOGS}/simulate/human/{{sample}}.log",
    benchmark:
        f"{BENCH}/simulate/human/{{sample}}.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        sim=canonical(
            {
                "seed": (config.get("simulate") or {}).get("seed"),
                "corpus": (config.get("simulate") or {}).get("corpus", {}),
                "human": (config.get("simulate") or {}).get("human", {}),
            }
        ),
    script:
        "../workflow_scripts/simulate_human_sample.py"


rule read_cross_species:
    input:
        h5ad=cross_species_path,
        synonyms=synonyms_input("human"),
    output:
        h5ad=f"{RESULTS}/harmonised/{CROSS}/{{sample}}.h5ad",
        genes=f"{RESULTS}/harmonised/{CROSS}/{{sample}}.unresolved_genes.tsv",
        orthologs=f"{RESULTS}/harmonised/{CROSS}/{{sample}}.orthologs.tsv",
    log:
        f"{LOGS}/harmonise/{CROSS}/{{sample}}.log",
    benchmark:
        f"{BENCH}/harmonise/{CROSS}/{{sample}}.tsv"
    conda:
        "../envs/foundation.yaml"
    params:
        sample=lambda wildcards: {
            "sample": wildcards.sample,
            "tissue": CROSS_SAMPLES[wildcards.sample].get("tissue"),
            "cell_type_column": CROSS_SAMPLES[wildcards.sample].get(
                "cell_type_column", "cell_type"
            ),
        },
    script:
        "../workflow_scripts/read_cross_species.py"


rule tokenize_cross_species:
    input:
        h5ad=f"{RESULTS}/qc/{CROSS}/{{sample}}.h5ad",
        dictionary=f"{TOK}/token_dictionary.json",
        medians=TOKENIZE["gene_medians"] or f"{TOK}/gene_medians.tsv",
    output:
        shards=directory(f"{TOK}/shards/{CROSS}/{{sample}}"),
        lengths=f"{TOK}/shards/{CROSS}/{{sample}}.lengths.npy",
        stats=f"{TOK}/shards/{CROSS}/{{sample}}.stats.json",
    log:
        f"{LOGS}/tokenize/shards/{CROSS}/{{sample}}.log",
    benchmark:
        f"{BENCH}/tokenize/shards/{CROSS}/{{sample}}.tsv"
    conda:
        "../envs/tokenize.yaml"
    threads: 1
    params:
        settings=lambda wildcards: {
            "source": CROSS,
            "sample": wildcards.sample,
            "version": TOKENIZE["version"],
            "max_length": TOKENIZE_MAX_LENGTH,
            "cell_attributes": TOKENIZE["cell_attributes"],
            "chunk_size": TOKENIZE["chunk_size"],
        },
    script:
        "../workflow_scripts/tokenize_sample.py"


rule cross_species:
    input:
        shards=[f"{TOK}/shards/{CROSS}/{s}" for s in CROSS_SAMPLES],
        lengths=[f"{TOK}/shards/{CROSS}/{s}.lengths.npy" for s in CROSS_SAMPLES],
        orthologs=[
            f"{RESULTS}/harmonised/{CROSS}/{s}.orthologs.tsv" for s in CROSS_SAMPLES
        ],
        qc=[f"{RESULTS}/qc/{CROSS}/{s}.qc.tsv" for s in CROSS_SAMPLES],
        model=PRETRAINED,
        classifier=f"{FM}/classifier/model",
        dictionary=f"{TOK}/token_dictionary.json",
        reference=f"{FM}/embeddings.h5ad",
    output:
        summary=f"{FM}/cross_species/summary.tsv",
        predictions=f"{FM}/cross_species/predictions.tsv",
    log:
        f"{LOGS}/foundation/cross_species.log",
    benchmark:
        f"{BENCH}/foundation/cross_species.tsv"
    conda:
        "../envs/foundation.yaml"
    threads: FOUNDATION_THREADS
    resources:
        **FOUNDATION_RESOURCES,
    params:
        samples=list(CROSS_SAMPLES),
        device=FOUNDATION_DEVICE,
        knn_k=(FOUNDATION.get(CROSS) or {}).get("knn_k", 10),
    script:
        "../workflow_scripts/cross_species.py"


rule figure_classifier_confusion:
    input:
        predictions=f"{FM}/classifier/predictions.tsv",
        metrics=f"{FM}/classifier/metrics.tsv",
    output:
        report(
            f"{RESULTS}/figures/classifier_confusion.png",
            caption="../report/classifier_confusion.rst",
            category="Foundation model",
        ),
    log:
        f"{LOGS}/figures/classifier_confusion.log",
    benchmark:
        f"{BENCH}/figures/classifier_confusion.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_classifier_confusion.py"


rule figure_embedding_umap:
    input:
        f"{FM}/embeddings.h5ad",
    output:
        report(
            f"{RESULTS}/figures/embedding_umap.png",
            caption="../report/embedding_umap.rst",
            category="Foundation model",
        ),
    log:
        f"{LOGS}/figures/embedding_umap.log",
    benchmark:
        f"{BENCH}/figures/embedding_umap.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_embedding_umap.py"


rule figure_perturbation_top_genes:
    input:
        tables=[f"{FM}/perturbation/{name}.tsv" for name in PERTURB_EXPERIMENTS],
    output:
        report(
            f"{RESULTS}/figures/perturbation_top_genes.png",
            caption="../report/perturbation_top_genes.rst",
            category="Foundation model",
        ),
    log:
        f"{LOGS}/figures/perturbation_top_genes.log",
    benchmark:
        f"{BENCH}/figures/perturbation_top_genes.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        experiments=canonical(PERTURB_EXPERIMENTS),
    script:
        "../workflow_scripts/figure_perturbation_top_genes.py"


rule figure_cross_species:
    input:
        summary=f"{FM}/cross_species/summary.tsv",
        predictions=f"{FM}/cross_species/predictions.tsv",
        orthologs=[
            f"{RESULTS}/harmonised/{CROSS}/{s}.orthologs.tsv" for s in CROSS_SAMPLES
        ],
    output:
        report(
            f"{RESULTS}/figures/cross_species.png",
            caption="../report/cross_species.rst",
            category="Foundation model",
        ),
    log:
        f"{LOGS}/figures/cross_species.log",
    benchmark:
        f"{BENCH}/figures/cross_species.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_cross_species.py"
