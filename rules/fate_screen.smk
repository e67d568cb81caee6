# The two seeds together (cellfate.foundation.fate_screen): VICDYF's fluctuation-driver genes
# toward each fate (rules/dynamics.smk) overexpressed in progenitors in the foundation model
# (rules/pretrain.smk or foundation.pretrained_model), against random genes.

FATE_SCREEN = (config.get("foundation") or {}).get("fluctuation_perturbation") or {}
# The screen's keys: its own block over the dynamics' fate annotation.
FATE_SCREEN_SPEC = canonical(
    {k: DYNAMICS[k] for k in ("fate_key", "fates") if DYNAMICS.get(k)} | FATE_SCREEN
)


# The simulated truth (the genes' true fates, for the table) where the data are the demo's.
fate_screen_truth = lambda wildcards: (
    [f"{SIM}/bifurcation/truth.h5ad"]
    if SIMULATED and wildcards.name == "bifurcation"
    else []
)
# The table, summary and figure of every velocity sample, when the config asks for the screen.
FATE_SCREEN_TARGETS = (
    [
        target
        for name in velocity_names()
        for target in (
            f"{FM}/fluctuation_perturbation/{name}.tsv",
            f"{FM}/fluctuation_perturbation/{name}.summary.tsv",
            f"{RESULTS}/figures/{name}/fluctuation_perturbation.png",
        )
    ]
    if FATE_SCREEN and DYNAMICS.get("fate_key") and DYNAMICS.get("fates")
    else []
)


rule fluctuation_perturbation:
    input:
        h5ad=f"{DYN}/{{name}}.h5ad",
        drivers=f"{DYN}/{{name}}/fluctuation_genes.tsv",
        model=PRETRAINED,
        medians=TOKENIZE["gene_medians"] or f"{TOK}/gene_medians.tsv",
        truth=fate_screen_truth,
    output:
        table=f"{FM}/fluctuation_perturbation/{{name}}.tsv",
        summary=f"{FM}/fluctuation_perturbation/{{name}}.summary.tsv",
    log:
        f"{LOGS}/foundation/fluctuation_perturbation/{{name}}.log",
    benchmark:
        f"{BENCH}/foundation/fluctuation_perturbation/{{name}}.tsv"
    conda:
        "../envs/foundation.yaml"
    threads: FOUNDATION_THREADS
    resources:
        **FOUNDATION_RESOURCES,
    params:
        spec=FATE_SCREEN_SPEC,
        settings=FOUNDATION_SETTINGS["perturb"],
        version=TOKENIZE["version"],
    script:
        "../workflow_scripts/fluctuation_perturbation.py"


rule figure_fluctuation_perturbation:
    input:
        table=f"{FM}/fluctuation_perturbation/{{name}}.tsv",
        summary=f"{FM}/fluctuation_perturbation/{{name}}.summary.tsv",
    output:
        report(
            f"{RESULTS}/figures/{{name}}/fluctuation_perturbation.png",
            caption="../report/fluctuation_perturbation.rst",
            category="Foundation model",
            subcategory="{name}",
        ),
    log:
        f"{LOGS}/figures/{{name}}/fluctuation_perturbation.log",
    benchmark:
        f"{BENCH}/figures/{{name}}/fluctuation_perturbation.tsv"
    conda:
        "../envs/figures.yaml"
    resources:
        mem_mb=1000,
    params:
        fdr=FATE_SCREEN.get("fdr", 0.05),
    script:
        "../workflow_scripts/figure_fluctuation_perturbation.py"
