# The demo's inputs: the public sources' files simulated with known ground truth
# (cellfate.simulate). Only active when the config has a `simulate:` block.


rule simulate_panglaodb_sample:
    output:
        rdata=f"{SIM}/sources/panglaodb/{{sample}}.sparse.RData",
        clusters=f"{SIM}/sources/panglaodb/sample_clusters/{{sample}}.seurat_clusters.txt",
        truth=f"{SIM}/truth/panglaodb/{{sample}}.tsv",
    log:
        f"{LOGS}/simulate/panglaodb/{{sample}}.log",
    benchmark:
        f"{BENCH}/simulate/panglaodb/{{sample}}.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        row=lambda wildcards: sample_row("panglaodb", wildcards.sample),
        sim=sim_params("corpus"),
    script:
        "../workflow_scripts/simulate_panglaodb_sample.py"


rule simulate_panglaodb_tables:
    output:
        metadata=f"{SIM}/sources/panglaodb/metadata.txt",
        annotations=f"{SIM}/sources/panglaodb/cell_type_annotations.txt",
    log:
        f"{LOGS}/simulate/panglaodb_tables.log",
    benchmark:
        f"{BENCH}/simulate/panglaodb_tables.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        rows=[sample_row("panglaodb", s) for s in sample_ids("panglaodb")],
        sim=sim_params("corpus"),
    script:
        "../workflow_scripts/simulate_panglaodb_tables.py"


rule simulate_expression_atlas_experiment:
    output:
        archive=f"{SIM}/sources/expression_atlas/{{sample}}-quantification-raw-files.zip",
        design=f"{SIM}/sources/expression_atlas/ExpDesign-{{sample}}.tsv",
        truth=f"{SIM}/truth/expression_atlas/{{sample}}.tsv",
    log:
        f"{LOGS}/simulate/expression_atlas/{{sample}}.log",
    benchmark:
        f"{BENCH}/simulate/expression_atlas/{{sample}}.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        row=lambda wildcards: sample_row("expression_atlas", wildcards.sample),
        sim=sim_params("corpus"),
    script:
        "../workflow_scripts/simulate_expression_atlas_experiment.py"


rule simulate_cellxgene_dataset:
    output:
        h5ad=f"{SIM}/sources/cellxgene/{{sample}}.h5ad",
        truth=f"{SIM}/truth/cellxgene/{{sample}}.tsv",
    log:
        f"{LOGS}/simulate/cellxgene/{{sample}}.log",
    benchmark:
        f"{BENCH}/simulate/cellxgene/{{sample}}.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        row=lambda wildcards: sample_row("cellxgene", wildcards.sample),
        donor_row=lambda wildcards: donor_row(wildcards.sample),
        sim=sim_params("corpus"),
    script:
        "../workflow_scripts/simulate_cellxgene_dataset.py"


rule simulate_bifurcation:
    output:
        truth=f"{SIM}/bifurcation/truth.h5ad",
        bam=f"{SIM}/bifurcation/possorted_genome_bam.bam",
        bai=f"{SIM}/bifurcation/possorted_genome_bam.bam.bai",
        gtf=f"{SIM}/bifurcation/genes.gtf",
        barcodes=f"{SIM}/bifurcation/barcodes.tsv",
    log:
        f"{LOGS}/simulate/bifurcation.log",
    benchmark:
        f"{BENCH}/simulate/bifurcation.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        sim=sim_params("bifurcation"),
    script:
        "../workflow_scripts/simulate_bifurcation.py"


# Fresh cells of the bifurcation's lineage (another draw, not the cells screened) that join the
# pretraining corpus when simulate.lineage_corpus_cells > 0 (rules/tokenize.smk).
rule simulate_lineage_corpus:
    output:
        f"{SIM}/lineage/bifurcation.h5ad",
    log:
        f"{LOGS}/simulate/lineage_corpus.log",
    benchmark:
        f"{BENCH}/simulate/lineage_corpus.tsv"
    conda:
        "../envs/simulate.yaml"
    resources:
        mem_mb=1000,
    params:
        sim=sim_params("bifurcation") | {"lineage_corpus_cells": LINEAGE_CORPUS_CELLS},
    script:
        "../workflow_scripts/simulate_lineage_corpus.py"


rule simulate_tissue:
    output:
        spots=f"{SIM}/tissue/spots.h5ad",
        reference=f"{SIM}/tissue/reference.h5ad",
    log:
        f"{LOGS}/simulate/tissue.log",
    benchmark:
        f"{BENCH}/simulate/tissue.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        sim=sim_params("tissue"),
    script:
        "../workflow_scripts/simulate_tissue.py"


rule simulate_cellxgene_listing:
    input:
        expand(
            f"{SIM}/sources/cellxgene/{{sample}}.h5ad", sample=sample_ids("cellxgene")
        ),
    output:
        f"{SIM}/sources/cellxgene/datasets.json",
    log:
        f"{LOGS}/simulate/cellxgene_listing.log",
    benchmark:
        f"{BENCH}/simulate/cellxgene_listing.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        rows=[sample_row("cellxgene", s) for s in sample_ids("cellxgene")],
    script:
        "../workflow_scripts/simulate_cellxgene_listing.py"
