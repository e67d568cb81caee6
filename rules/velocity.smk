# Spliced/unspliced counting: velocyto run on each sample's BAM + GTF into its own output
# directory, then the loom as AnnData on the sample's QC'd cells (cellfate.velocity). A sample
# given as a loom (velocyto's) or an h5ad with spliced/unspliced layers skips velocyto.
# Samples: the demo's simulated bifurcation (when simulating) and config velocity.samples;
# their inputs come from velocity_sample() and velocity_counts_input() in common.smk.


rule velocyto_count:
    input:
        unpack(velocyto_inputs),
    output:
        directory(f"{RESULTS}/velocity/{{name}}/velocyto"),
    log:
        f"{LOGS}/velocity/{{name}}/velocyto.log",
    benchmark:
        f"{BENCH}/velocity/{{name}}/velocyto.tsv"
    conda:
        "../envs/velocity.yaml"
    threads: 1
    params:
        samtools_memory_mb=lambda wildcards: (config.get("velocity") or {}).get(
            "samtools_memory_mb", 1024
        ),
    script:
        "../workflow_scripts/velocyto_count.py"


rule velocity_anndata:
    input:
        counts=velocity_counts_input,
        cells=lambda wildcards: velocity_sample(wildcards.name).get("cells") or [],
    output:
        f"{RESULTS}/velocity/{{name}}.h5ad",
    log:
        f"{LOGS}/velocity/{{name}}/anndata.log",
    benchmark:
        f"{BENCH}/velocity/{{name}}/anndata.tsv"
    conda:
        "../envs/velocity.yaml"
    params:
        barcode_key=lambda wildcards: velocity_sample(wildcards.name).get(
            "barcode_key", "barcode"
        ),
        kind=lambda wildcards: velocity_counts_kind(wildcards.name),
    script:
        "../workflow_scripts/velocity_anndata.py"
