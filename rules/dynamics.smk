# VICDYF: stochastic cell-state dynamics and their fluctuation (cellfate.dynamics), on the
# spliced/unspliced counts of rules/velocity.smk; then the fluctuation analysis, the validation
# against the simulated truth (demo only) and the figures.

# DYNAMICS, DYN, dynamics_targets() and vicdyf_fit_mem_mb() are defined in common.smk.
# The fluctuation analysis' keys: changing them reruns that analysis, not the fit.
FLUCTUATION_KEYS = ("fate_key", "fates", "top_fraction", "leiden_resolution")


rule vicdyf_fit:
    input:
        f"{RESULTS}/velocity/{{name}}.h5ad",
    output:
        model=directory(f"{DYN}/{{name}}/model"),
        h5ad=f"{DYN}/{{name}}.h5ad",
    log:
        f"{LOGS}/dynamics/{{name}}/fit.log",
    benchmark:
        f"{BENCH}/dynamics/{{name}}/fit.tsv"
    conda:
        "../envs/dynamics.yaml"
    threads: 1
    resources:
        gpu=int(str(DYNAMICS.get("device", "auto")).startswith("cuda")),
        mem_mb=vicdyf_fit_mem_mb,
    params:
        cfg=canonical(
            {
                k: v
                for k, v in DYNAMICS.items()
                if k not in FLUCTUATION_KEYS + ("crosscheck",)
            }
        ),
    script:
        "../workflow_scripts/vicdyf_fit.py"


rule vicdyf_fluctuation:
    input:
        h5ad=f"{DYN}/{{name}}.h5ad",
        model=f"{DYN}/{{name}}/model",
    output:
        genes=report(
            f"{DYN}/{{name}}/fluctuation_genes.tsv",
            caption="../report/vicdyf_fluctuation_table.rst",
            category="Dynamics (VICDYF)",
            subcategory="{name}",
        ),
        clusters=f"{DYN}/{{name}}/fluctuation_clusters.tsv",
    log:
        f"{LOGS}/dynamics/{{name}}/fluctuation.log",
    benchmark:
        f"{BENCH}/dynamics/{{name}}/fluctuation.tsv"
    conda:
        "../envs/dynamics.yaml"
    params:
        cfg=canonical(
            {k: v for k, v in DYNAMICS.items() if k in FLUCTUATION_KEYS + ("seed",)}
        ),
    script:
        "../workflow_scripts/vicdyf_fluctuation.py"


rule vicdyf_validate:
    input:
        h5ad=f"{DYN}/bifurcation.h5ad",
        genes=f"{DYN}/bifurcation/fluctuation_genes.tsv",
        truth=f"{SIM}/bifurcation/truth.h5ad",
    output:
        f"{DYN}/bifurcation/validation.tsv",
    log:
        f"{LOGS}/dynamics/bifurcation/validate.log",
    benchmark:
        f"{BENCH}/dynamics/bifurcation/validate.tsv"
    conda:
        "../envs/dynamics.yaml"
    script:
        "../workflow_scripts/vicdyf_validate.py"


rule figure_vicdyf_fluctuation:
    input:
        h5ad=f"{DYN}/{{name}}.h5ad",
        clusters=f"{DYN}/{{name}}/fluctuation_clusters.tsv",
    output:
        report(
            f"{RESULTS}/figures/{{name}}/vicdyf_fluctuation.png",
            caption="../report/vicdyf_fluctuation.rst",
            category="Dynamics (VICDYF)",
            subcategory="{name}",
        ),
    log:
        f"{LOGS}/figures/{{name}}/vicdyf_fluctuation.log",
    benchmark:
        f"{BENCH}/figures/{{name}}/vicdyf_fluctuation.tsv"
    conda:
        "../envs/dynamics.yaml"
    params:
        fate_key=DYNAMICS.get("fate_key"),
    script:
        "../workflow_scripts/figure_vicdyf_fluctuation.py"


rule figure_vicdyf_velocity:
    input:
        f"{DYN}/{{name}}.h5ad",
    output:
        report(
            f"{RESULTS}/figures/{{name}}/vicdyf_velocity.png",
            caption="../report/vicdyf_velocity.rst",
            category="Dynamics (VICDYF)",
            subcategory="{name}",
        ),
    log:
        f"{LOGS}/figures/{{name}}/vicdyf_velocity.log",
    benchmark:
        f"{BENCH}/figures/{{name}}/vicdyf_velocity.tsv"
    conda:
        "../envs/dynamics.yaml"
    params:
        color_key=DYNAMICS.get("fate_key"),
    script:
        "../workflow_scripts/figure_vicdyf_velocity.py"


rule figure_vicdyf_fluctuation_genes:
    input:
        f"{DYN}/{{name}}/fluctuation_genes.tsv",
    output:
        report(
            f"{RESULTS}/figures/{{name}}/vicdyf_fluctuation_genes.png",
            caption="../report/vicdyf_fluctuation_genes.rst",
            category="Dynamics (VICDYF)",
            subcategory="{name}",
        ),
    log:
        f"{LOGS}/figures/{{name}}/vicdyf_fluctuation_genes.log",
    benchmark:
        f"{BENCH}/figures/{{name}}/vicdyf_fluctuation_genes.tsv"
    conda:
        "../envs/dynamics.yaml"
    script:
        "../workflow_scripts/figure_vicdyf_fluctuation_genes.py"


rule figure_vicdyf_validation:
    input:
        h5ad=f"{DYN}/bifurcation.h5ad",
        truth=f"{SIM}/bifurcation/truth.h5ad",
        validation=f"{DYN}/bifurcation/validation.tsv",
    output:
        report(
            f"{RESULTS}/figures/bifurcation/vicdyf_validation.png",
            caption="../report/vicdyf_validation.rst",
            category="Dynamics (VICDYF)",
            subcategory="bifurcation",
        ),
    log:
        f"{LOGS}/figures/bifurcation/vicdyf_validation.log",
    benchmark:
        f"{BENCH}/figures/bifurcation/vicdyf_validation.tsv"
    conda:
        "../envs/dynamics.yaml"
    script:
        "../workflow_scripts/figure_vicdyf_validation.py"


rule vicdyf_crosscheck:
    output:
        f"{DYN}/crosscheck/validation.tsv",
    log:
        f"{LOGS}/dynamics/crosscheck.log",
    benchmark:
        f"{BENCH}/dynamics/crosscheck.tsv"
    conda:
        "../envs/dynamics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        cfg=canonical(
            {
                k: v
                for k, v in DYNAMICS.items()
                if k in ("crosscheck", "beta_init", "diffusion")
            }
        ),
    script:
        "../workflow_scripts/vicdyf_crosscheck.py"


rule figure_vicdyf_crosscheck:
    input:
        f"{DYN}/crosscheck/validation.tsv",
    output:
        report(
            f"{RESULTS}/figures/vicdyf_crosscheck.png",
            caption="../report/vicdyf_crosscheck.rst",
            category="Dynamics (VICDYF)",
            subcategory="simulators",
        ),
    log:
        f"{LOGS}/figures/vicdyf_crosscheck.log",
    benchmark:
        f"{BENCH}/figures/vicdyf_crosscheck.tsv"
    conda:
        "../envs/dynamics.yaml"
    resources:
        mem_mb=1000,
    script:
        "../workflow_scripts/figure_vicdyf_crosscheck.py"
