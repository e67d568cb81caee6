# Intake: each downloaded sample -> harmonised AnnData (Ensembl ids, one label set) -> QC flags.
# Reading and QC are separate rules so a changed threshold reruns QC only. Memory grows with
# each retry (`--retries`): a sample that hits the limit is resubmitted with more.


rule read_panglaodb:
    input:
        rdata=f"{RESULTS}/downloads/panglaodb/{{sample}}.RData",
        clusters=f"{RESULTS}/downloads/panglaodb/sample_clusters/{{sample}}.seurat_clusters.txt",
        annotations=f"{RESULTS}/downloads/panglaodb/cell_type_annotations.txt",
        synonyms=synonyms_input("mouse"),
    output:
        h5ad=f"{RESULTS}/harmonised/panglaodb/{{sample}}.h5ad",
        genes=f"{RESULTS}/harmonised/panglaodb/{{sample}}.unresolved_genes.tsv",
    log:
        f"{LOGS}/harmonise/panglaodb/{{sample}}.log",
    benchmark:
        f"{BENCH}/harmonise/panglaodb/{{sample}}.tsv"
    conda:
        "../envs/qc.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    params:
        row=lambda wildcards: sample_row("panglaodb", wildcards.sample),
    script:
        "../workflow_scripts/read_panglaodb.py"


rule read_expression_atlas:
    input:
        archive=f"{RESULTS}/downloads/expression_atlas/{{sample}}-quantification-raw.zip",
        design=f"{RESULTS}/downloads/expression_atlas/{{sample}}-experiment-design.tsv",
        synonyms=synonyms_input("mouse"),
    output:
        h5ad=f"{RESULTS}/harmonised/expression_atlas/{{sample}}.h5ad",
        genes=f"{RESULTS}/harmonised/expression_atlas/{{sample}}.unresolved_genes.tsv",
    log:
        f"{LOGS}/harmonise/expression_atlas/{{sample}}.log",
    benchmark:
        f"{BENCH}/harmonise/expression_atlas/{{sample}}.tsv"
    conda:
        "../envs/qc.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    params:
        row=lambda wildcards: sample_row("expression_atlas", wildcards.sample),
    script:
        "../workflow_scripts/read_expression_atlas.py"


rule read_cellxgene:
    input:
        dataset=f"{RESULTS}/downloads/cellxgene/{{sample}}.h5ad",
        synonyms=synonyms_input("mouse"),
    output:
        h5ad=f"{RESULTS}/harmonised/cellxgene/{{sample}}.h5ad",
        genes=f"{RESULTS}/harmonised/cellxgene/{{sample}}.unresolved_genes.tsv",
    log:
        f"{LOGS}/harmonise/cellxgene/{{sample}}.log",
    benchmark:
        f"{BENCH}/harmonise/cellxgene/{{sample}}.tsv"
    conda:
        "../envs/qc.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    params:
        row=lambda wildcards: sample_row("cellxgene", wildcards.sample),
    script:
        "../workflow_scripts/read_cellxgene.py"


rule qc_sample:
    input:
        f"{RESULTS}/harmonised/{{source}}/{{sample}}.h5ad",
    output:
        h5ad=f"{RESULTS}/qc/{{source}}/{{sample}}.h5ad",
        table=f"{RESULTS}/qc/{{source}}/{{sample}}.qc.tsv",
    log:
        f"{LOGS}/qc/{{source}}/{{sample}}.log",
    benchmark:
        f"{BENCH}/qc/{{source}}/{{sample}}.tsv"
    conda:
        "../envs/qc.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    params:
        thresholds=canonical(config["qc"]),
    script:
        "../workflow_scripts/qc_sample.py"


rule corpus_summary:
    input:
        h5ads=qc_h5ads(),
        tables=[f"{RESULTS}/qc/{s}/{x}.qc.tsv" for s, x in all_samples()],
    output:
        summary=f"{RESULTS}/qc/corpus_summary.tsv",
        composition=f"{RESULTS}/qc/corpus_composition.tsv",
    log:
        f"{LOGS}/qc/corpus_summary.log",
    benchmark:
        f"{BENCH}/qc/corpus_summary.tsv"
    conda:
        "../envs/qc.yaml"
    script:
        "../workflow_scripts/corpus_summary.py"
