"""Rule pretrain -> torchrun (one node) or srun + one torchrun per node -> cellfate.foundation.train.

A script rather than ``shell:`` because the launch must use this environment's Python by absolute
path: Snakemake does not put the venv (or conda env) on PATH, so a bare ``torchrun`` is not found.
"""

from cellfate.foundation import launch
from cellfate.workflow import run


def work() -> None:
    settings = dict(snakemake.params.settings)
    train_args = launch.train_arguments(
        token_dictionary=snakemake.input.dictionary,
        model_config=snakemake.input.model_config,
        shards=list(snakemake.params.shards),
        output_model=snakemake.output.model,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        history=snakemake.output.history,
        heldout=snakemake.output.heldout,
        resume=True,  # continue from the latest checkpoint when a previous attempt left one
        **settings,
    )
    command = launch.pretrain_command(
        snakemake.params.gpus,
        snakemake.params.nodes,
        train_args,
        cpus_per_task=snakemake.threads,
        port=snakemake.params.rdzv_port,
    )
    launch.exec_logged(command, snakemake.log[0])


run(snakemake, work)
