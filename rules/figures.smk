# Figures: one rule per figure panel, each wrapped in report() with a caption.


rule figure_simulated_corpus:
    input:
        truth=lambda wildcards: [
            f"{SIM}/truth/{source}/{sample}.tsv"
            for source in SOURCES
            for sample in sample_ids(source)
        ],
    output:
        report(
            f"{RESULTS}/figures/simulated_corpus.png",
            caption="../report/simulated_corpus.rst",
            category="Demo data",
        ),
    log:
        f"{LOGS}/figures/simulated_corpus.log",
    benchmark:
        f"{BENCH}/figures/simulated_corpus.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_simulated_corpus.py"


rule figure_simulated_bifurcation:
    input:
        truth=f"{SIM}/bifurcation/truth.h5ad",
    output:
        report(
            f"{RESULTS}/figures/simulated_bifurcation.png",
            caption="../report/simulated_bifurcation.rst",
            category="Demo data",
        ),
    log:
        f"{LOGS}/figures/simulated_bifurcation.log",
    benchmark:
        f"{BENCH}/figures/simulated_bifurcation.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_simulated_bifurcation.py"


rule figure_simulated_tissue:
    input:
        spots=f"{SIM}/tissue/spots.h5ad",
    output:
        report(
            f"{RESULTS}/figures/simulated_tissue.png",
            caption="../report/simulated_tissue.rst",
            category="Demo data",
        ),
    log:
        f"{LOGS}/figures/simulated_tissue.log",
    benchmark:
        f"{BENCH}/figures/simulated_tissue.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_simulated_tissue.py"


rule figure_qc_metrics:
    input:
        qc_h5ads(),
    output:
        report(
            f"{RESULTS}/figures/qc_metrics.png",
            caption="../report/qc_metrics.rst",
            category="Corpus",
        ),
    log:
        f"{LOGS}/figures/qc_metrics.log",
    benchmark:
        f"{BENCH}/figures/qc_metrics.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_qc_metrics.py"


rule figure_corpus_summary:
    input:
        composition=f"{RESULTS}/qc/corpus_composition.tsv",
        summary=f"{RESULTS}/qc/corpus_summary.tsv",
    output:
        report(
            f"{RESULTS}/figures/corpus_summary.png",
            caption="../report/corpus_summary.rst",
            category="Corpus",
        ),
    log:
        f"{LOGS}/figures/corpus_summary.log",
    benchmark:
        f"{BENCH}/figures/corpus_summary.tsv"
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow_scripts/figure_corpus_summary.py"
