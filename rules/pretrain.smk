# Pretraining the foundation model (cellfate.foundation): the tokenized shards of every sample ->
# a masked-gene-model BERT, on N GPUs of one node (torchrun) or of several nodes (srun, one
# torchrun per node, c10d rendezvous). Checkpoints are not outputs, so that Snakemake never deletes
# them: a failed, preempted or timed-out job resumes from the latest one on its next attempt.

PRETRAIN = config["pretrain"]
# Keys of the pretrain block that shape the job, not the training; the rest go to the trainer.
PRETRAIN_JOB_KEYS = (
    "model",
    "gpus",
    "nodes",
    "threads",
    "mem_mb",
    "runtime",
    "rdzv_port",
)


# The tokenized shard folder of every sample (its .lengths.npy lies beside it), the simulated
# lineage's included; the zero-shot kNN reads the corpus samples' only (their cell types).
PRETRAIN_SHARDS = [
    f"{RESULTS}/tokenize/shards/{source}/{sample}"
    for source, sample in tokenize_samples()
]
KNN_SHARDS = [
    f"{RESULTS}/tokenize/shards/{source}/{sample}" for source, sample in all_samples()
]
# One node: gpu=N (the Slurm plugin asks --gpus=N; torchrun starts N processes; 0 = one CPU
# process). Several nodes: gres gpu:N per node and one srun task per node (mpi), each running
# torchrun. tasks_per_gpu=0 keeps the plugin from starting the job once per GPU.
PRETRAIN_RESOURCES = {
    "mem_mb": PRETRAIN.get("mem_mb", 16000),
    "runtime": PRETRAIN.get("runtime", 1440),
    "cpus_per_task": PRETRAIN.get("threads", 8),
    "tasks_per_gpu": 0,
} | (
    {
        "nodes": PRETRAIN["nodes"],
        "tasks": PRETRAIN["nodes"],
        "mpi": "srun",
        "gres": f"gpu:{PRETRAIN['gpus']}",
    }
    if PRETRAIN.get("nodes", 1) > 1
    else {"gpu": PRETRAIN.get("gpus", 0)}
)


# With foundation.pretrained_model set, nothing is trained: no pretrain job, no curve.
PRETRAIN_TARGETS = (
    []
    if PRETRAINED_SOURCE
    else [f"{RESULTS}/pretrain/model", f"{RESULTS}/figures/pretrain_curve.png"]
)


rule pretrain:
    input:
        dictionary=f"{RESULTS}/tokenize/token_dictionary.json",
        model_config=PRETRAIN["model"],
        shards=PRETRAIN_SHARDS,
        lengths=[f"{shard}.lengths.npy" for shard in PRETRAIN_SHARDS],
    output:
        model=directory(f"{RESULTS}/pretrain/trained"),
        history=f"{RESULTS}/pretrain/history.tsv",
        heldout=f"{RESULTS}/pretrain/heldout_mlm_loss.tsv",
    log:
        f"{LOGS}/pretrain/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain/pretrain.tsv"
    conda:
        "../envs/pretrain.yaml"
    threads: PRETRAIN.get("threads", 8)
    resources:
        **PRETRAIN_RESOURCES,
    params:
        settings=canonical(
            {k: v for k, v in PRETRAIN.items() if k not in PRETRAIN_JOB_KEYS}
        ),
        shards=PRETRAIN_SHARDS,
        checkpoint_dir=f"{RESULTS}/pretrain/checkpoints",
        gpus=PRETRAIN.get("gpus", 0),
        nodes=PRETRAIN.get("nodes", 1),
        rdzv_port=PRETRAIN.get("rdzv_port", 29500),
    script:
        "../workflow_scripts/pretrain.py"


# Did it learn (held-out loss vs the unigram baseline, zero-shot kNN of cell types), and the
# self-contained model folder: weights, config, token dictionary, gene medians, model card.
rule pretrain_card:
    input:
        trained=f"{RESULTS}/pretrain/trained",
        heldout=f"{RESULTS}/pretrain/heldout_mlm_loss.tsv",
        medians=f"{TOK}/gene_medians.tsv",
        shards=PRETRAIN_SHARDS,
        lengths=[f"{shard}.lengths.npy" for shard in PRETRAIN_SHARDS],
    output:
        model=directory(f"{RESULTS}/pretrain/model"),
        heldout=f"{RESULTS}/pretrain/heldout_loss.tsv",
    log:
        f"{LOGS}/pretrain/pretrain_card.log",
    benchmark:
        f"{BENCH}/pretrain/pretrain_card.tsv"
    conda:
        "../envs/pretrain.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=canonical(
            {k: v for k, v in PRETRAIN.items() if k not in PRETRAIN_JOB_KEYS}
        ),
        shards=PRETRAIN_SHARDS,
        knn_shards=KNN_SHARDS,
        knn_k=10,  # zero-shot kNN of cell types: k = 10, cosine, 5-fold
    script:
        "../workflow_scripts/pretrain_card.py"


rule figure_pretrain_curve:
    input:
        history=f"{RESULTS}/pretrain/history.tsv",
        heldout=f"{RESULTS}/pretrain/heldout_loss.tsv",
    output:
        report(
            f"{RESULTS}/figures/pretrain_curve.png",
            caption="../report/pretrain_curve.rst",
            category="Pretraining",
        ),
    log:
        f"{LOGS}/figures/pretrain_curve.log",
    benchmark:
        f"{BENCH}/figures/pretrain_curve.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_pretrain_curve.py"
