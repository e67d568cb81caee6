"""Rule forward_analysis -> cellfate.spatial.forward_pipeline.forward_analysis."""

from cellfate.spatial import forward_pipeline
from cellfate.workflow import run

run(snakemake, lambda: forward_pipeline.forward_analysis(
    snakemake.input.cells, snakemake.input.p_mat, snakemake.output.table, snakemake.output.cells,
    cfg=snakemake.params.cfg, sim=snakemake.params.sim, threads=snakemake.threads))
