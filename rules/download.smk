# Downloads of the public sources: resumable, checksummed against a manifest, atomic.
# Local rules (cluster compute nodes often have no internet), throttled by the global
# `downloads` resource and retried by Snakemake on top of the downloader's own retries.


localrules:
    download_panglaodb_counts,
    download_panglaodb_annotations,
    download_expression_atlas,
    download_cellxgene_listing,
    download_cellxgene_dataset,
    download_gene_synonyms,
    download_file,
    download_archive,


rule download_panglaodb_counts:
    input:
        lambda wildcards: local_source(
            "panglaodb_counts", "panglaodb", wildcards.sample
        )
        + local_source("panglaodb_clusters", "panglaodb", wildcards.sample),
    output:
        rdata=f"{RESULTS}/downloads/panglaodb/{{sample}}.RData",
        clusters=f"{RESULTS}/downloads/panglaodb/sample_clusters/{{sample}}.seurat_clusters.txt",
    log:
        f"{LOGS}/download/panglaodb/{{sample}}.log",
    benchmark:
        f"{BENCH}/download/panglaodb/{{sample}}.tsv"
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        urls=lambda wildcards: {
            "rdata": source_url("panglaodb_counts", "panglaodb", wildcards.sample),
            "clusters": source_url(
                "panglaodb_clusters", "panglaodb", wildcards.sample
            ),
        },
        source="panglaodb",
        label=lambda wildcards: f"PanglaoDB {wildcards.sample}",
    script:
        "../workflow_scripts/download.py"


rule download_panglaodb_annotations:
    input:
        local_source("panglaodb_annotations"),
    output:
        annotations=f"{RESULTS}/downloads/panglaodb/cell_type_annotations.txt",
    log:
        f"{LOGS}/download/panglaodb/cell_type_annotations.log",
    benchmark:
        f"{BENCH}/download/panglaodb/cell_type_annotations.tsv"
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        urls={"annotations": source_url("panglaodb_annotations")},
        source="panglaodb",
        label="PanglaoDB cell_type_annotations.txt",
    script:
        "../workflow_scripts/download.py"


rule download_expression_atlas:
    input:
        lambda wildcards: local_source(
            "expression_atlas_counts", "expression_atlas", wildcards.sample
        )
        + local_source("expression_atlas_design", "expression_atlas", wildcards.sample),
    output:
        archive=f"{RESULTS}/downloads/expression_atlas/{{sample}}-quantification-raw.zip",
        design=f"{RESULTS}/downloads/expression_atlas/{{sample}}-experiment-design.tsv",
    log:
        f"{LOGS}/download/expression_atlas/{{sample}}.log",
    benchmark:
        f"{BENCH}/download/expression_atlas/{{sample}}.tsv"
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        urls=lambda wildcards: {
            "archive": source_url(
                "expression_atlas_counts", "expression_atlas", wildcards.sample
            ),
            "design": source_url(
                "expression_atlas_design", "expression_atlas", wildcards.sample
            ),
        },
        source="expression_atlas",
        label=lambda wildcards: f"Expression Atlas {wildcards.sample}",
    script:
        "../workflow_scripts/download.py"


rule download_cellxgene_listing:
    input:
        local_source("cellxgene_listing"),
    output:
        listing=f"{RESULTS}/downloads/cellxgene/datasets.json",
    log:
        f"{LOGS}/download/cellxgene/datasets.log",
    benchmark:
        f"{BENCH}/download/cellxgene/datasets.tsv"
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        urls={"listing": source_url("cellxgene_listing")},
        source="cellxgene",
        label="CELLxGENE dataset listing",
    script:
        "../workflow_scripts/download.py"


rule download_cellxgene_dataset:
    input:
        listing=f"{RESULTS}/downloads/cellxgene/datasets.json",
        simulated=lambda wildcards: (
            [f"{SIM}/sources/cellxgene/{wildcards.sample}.h5ad"] if SIMULATED else []
        ),
    output:
        f"{RESULTS}/downloads/cellxgene/{{sample}}.h5ad",
    log:
        f"{LOGS}/download/cellxgene/{{sample}}.log",
    benchmark:
        f"{BENCH}/download/cellxgene/{{sample}}.tsv"
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        dataset_id=lambda wildcards: sample_row("cellxgene", wildcards.sample)[
            "dataset_id"
        ],
    script:
        "../workflow_scripts/download_cellxgene_dataset.py"


rule download_gene_synonyms:
    input:
        lambda wildcards: local_source(f"gene_synonyms_{wildcards.species}"),
    output:
        table=f"{RESULTS}/downloads/genes/{{species}}_synonyms.tsv",
    log:
        f"{LOGS}/download/genes/{{species}}_synonyms.log",
    benchmark:
        f"{BENCH}/download/genes/{{species}}_synonyms.tsv"
    wildcard_constraints:
        species="mouse|human",
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        urls=lambda wildcards: {
            "table": source_url(f"gene_synonyms_{wildcards.species}")
        },
        source="genes",
        label=lambda wildcards: f"{wildcards.species} gene synonyms",
    script:
        "../workflow_scripts/download.py"


rule download_file:
    output:
        "{path}",
    log:
        f"{LOGS}/download/files/{{path}}.log",
    benchmark:
        f"{BENCH}/download/files/{{path}}.tsv"
    wildcard_constraints:
        path=listed_paths(False),
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        urls=lambda wildcards: {"file": DOWNLOAD_FILES[wildcards.path]},
        source=lambda wildcards: f"files/{os.path.dirname(wildcards.path)}",
        label=lambda wildcards: wildcards.path,
    script:
        "../workflow_scripts/download.py"


rule download_archive:
    output:
        directory("{path}"),
    log:
        f"{LOGS}/download/files/{{path}}.log",
    benchmark:
        f"{BENCH}/download/files/{{path}}.tsv"
    wildcard_constraints:
        path=listed_paths(True),
    retries: config["download"]["job_retries"]
    conda:
        "../envs/download.yaml"
    resources:
        downloads=1,
    params:
        **download_params(),
        url=lambda wildcards: DOWNLOAD_FILES[wildcards.path],
        source=lambda wildcards: f"files/{os.path.dirname(wildcards.path)}",
        label=lambda wildcards: wildcards.path,
    script:
        "../workflow_scripts/download_archive.py"
