# Where cells sit in tissue (cellfate.spatial): DeepCOLOR maps single cells onto spots ->
# colocalization (type matrix, cell-pair edges, pair clusters) -> ligand activity over the edges
# -> environment-dependent dynamics. On the demo the inputs are the simulated tissue, and the
# environment analysis runs on a second simulated tissue whose fate choice a partner type drives.

SPATIAL = config.get("spatial") or {}
SP = f"{RESULTS}/spatial"


# User-given inputs, else the simulated tissue (demo), else none (the stage is skipped). Spots
# given as a Space Ranger folder or as several sections, and a reference given as several
# single-cell spatial sections, are first made into one h5ad by rule spatial_input.
SPATIAL_GIVEN = {
    what: SPATIAL.get(what)
    for what in ("reference", "spots")
    if isinstance(SPATIAL.get(what), dict)
    or (
        what == "spots"
        and SPATIAL.get(what)
        and not str(SPATIAL[what]).endswith(".h5ad")
    )
}
SPATIAL_REFERENCE = (
    f"{SP}/inputs/reference.h5ad"
    if "reference" in SPATIAL_GIVEN
    else SPATIAL.get("reference")
    or (f"{SIM}/tissue/reference.h5ad" if SIMULATED else None)
)
SPATIAL_SPOTS = (
    f"{SP}/inputs/spots.h5ad"
    if "spots" in SPATIAL_GIVEN
    else SPATIAL.get("spots") or (f"{SIM}/tissue/spots.h5ad" if SIMULATED else None)
)
SPATIAL_LIGANDS = SPATIAL.get("ligand_target")


# The environment analysis: on the demo the simulated environment tissue, else the main
# DeepCOLOR run (whose cells then need spliced and unspliced layers).
# On the demo two tissues: `environment` (the driver sets fate and pace: the positive control) and
# `environment_negative` (same tissue, the partners have no effect: nothing may be named).
ENV_RUNS = "environment|environment_negative"


ENV_SOURCE = (
    {}
    if SIMULATED
    else {
        "cells": f"{SP}/deepcolor.h5ad",
        "p_mat": f"{SP}/p_mat.npy",
        "ligand_target": SPATIAL_LIGANDS or [],
        "spots": SPATIAL_SPOTS or [],
    }
)
SPATIAL_ON = bool(SPATIAL and SPATIAL_REFERENCE and SPATIAL_SPOTS)
LIGANDS_ON = SPATIAL_ON and bool(SPATIAL_LIGANDS)
ENVIRONMENT_ON = SPATIAL_ON and (SIMULATED or (LIGANDS_ON and "environment" in SPATIAL))
# The forward analysis (issue 16): on the demo, the positive environment tissue, validated
# against the simulator re-run under each intervention; else the main run, when configured.
FORWARD_ON = ENVIRONMENT_ON and (SIMULATED or "forward" in SPATIAL)
FORWARD_SOURCE = (
    {
        "cells": f"{SP}/environment/deepcolor.h5ad",
        "p_mat": f"{SP}/environment/p_mat.npy",
    }
    if SIMULATED
    else {"cells": f"{SP}/deepcolor.h5ad", "p_mat": f"{SP}/p_mat.npy"}
)
# Every spatial result and figure this config can make (for the `all` rule).
SPATIAL_TARGETS = (
    (
        [
            f"{SP}/colocalization_types.tsv",
            f"{SP}/pair_clusters.tsv",
            f"{RESULTS}/figures/deepcolor_maps.png",
            f"{RESULTS}/figures/colocalization_heatmap.png",
            f"{RESULTS}/figures/pair_clusters_umap.png",
        ]
        if SPATIAL_ON
        else []
    )
    + (
        [f"{SP}/ligand_activity.tsv", f"{RESULTS}/figures/ligand_activity.png"]
        if LIGANDS_ON
        else []
    )
    + (
        [f"{SP}/environment_modes.tsv", f"{RESULTS}/figures/environment_dynamics.png"]
        + ([f"{SP}/environment_negative_modes.tsv"] if SIMULATED else [])
        if ENVIRONMENT_ON
        else []
    )
    + (
        [
            f"{SP}/forward_shifts.tsv",
            f"{RESULTS}/figures/forward_shifts.png",
            f"{RESULTS}/figures/forward_decomposition.png",
        ]
        if FORWARD_ON
        else []
    )
    + (
        [f"{SP}/validation.tsv", f"{RESULTS}/figures/spatial_validation.png"]
        if SPATIAL_ON and SIMULATED
        else []
    )
)


rule spatial_input:
    input:
        spatial_input_files,
    output:
        f"{SP}/inputs/{{what}}.h5ad",
    log:
        f"{LOGS}/spatial/input_{{what}}.log",
    benchmark:
        f"{BENCH}/spatial/input_{{what}}.tsv"
    wildcard_constraints:
        what="reference|spots",
    conda:
        "../envs/spatial.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
    params:
        paths=lambda wildcards: SPATIAL_GIVEN[wildcards.what],
    script:
        "../workflow_scripts/spatial_input.py"


rule deepcolor:
    input:
        reference=SPATIAL_REFERENCE or [],
        spots=SPATIAL_SPOTS or [],
    output:
        model_dir=directory(f"{SP}/model"),
        cells_h5ad=f"{SP}/deepcolor.h5ad",
        p_mat=f"{SP}/p_mat.npy",
        mapped_spots=f"{SP}/spots_mapped.h5ad",
    log:
        f"{LOGS}/spatial/deepcolor.log",
    benchmark:
        f"{BENCH}/spatial/deepcolor.tsv"
    conda:
        "../envs/spatial.yaml"
    threads: SPATIAL.get("threads", 1)
    resources:
        gpu=int(str(SPATIAL.get("device", "cpu")).startswith("cuda")),
        mem_mb=mem_deepcolor,
    params:
        cfg=spatial_params("device", "deepcolor"),
    script:
        "../workflow_scripts/deepcolor.py"


rule colocalization:
    input:
        cells=f"{SP}/deepcolor.h5ad",
        p_mat=f"{SP}/p_mat.npy",
    output:
        types=f"{SP}/colocalization_types.tsv",
        edges=f"{SP}/colocalization_edges.parquet",
    log:
        f"{LOGS}/spatial/colocalization.log",
    benchmark:
        f"{BENCH}/spatial/colocalization.tsv"
    conda:
        "../envs/spatial.yaml"
    params:
        cfg=spatial_params("colocalization"),
    script:
        "../workflow_scripts/colocalization.py"


rule pair_clusters:
    input:
        cells=f"{SP}/deepcolor.h5ad",
        edges=f"{SP}/colocalization_edges.parquet",
    output:
        f"{SP}/pair_clusters.tsv",
    log:
        f"{LOGS}/spatial/pair_clusters.log",
    benchmark:
        f"{BENCH}/spatial/pair_clusters.tsv"
    conda:
        "../envs/spatial.yaml"
    params:
        cfg=spatial_params("pair_clusters"),
    script:
        "../workflow_scripts/pair_clusters.py"


rule ligand_activity:
    input:
        cells=f"{SP}/deepcolor.h5ad",
        model=f"{SP}/model",
        edges=f"{SP}/colocalization_edges.parquet",
        ligand_target=SPATIAL_LIGANDS or [],
    output:
        f"{SP}/ligand_activity.tsv",
    log:
        f"{LOGS}/spatial/ligand_activity.log",
    benchmark:
        f"{BENCH}/spatial/ligand_activity.tsv"
    conda:
        "../envs/spatial.yaml"
    params:
        cfg=spatial_params("ligands"),
    script:
        "../workflow_scripts/ligand_activity.py"


rule simulate_environment:
    output:
        spots=f"{SIM}/{{envrun}}/spots.h5ad",
        reference=f"{SIM}/{{envrun}}/reference.h5ad",
        ligand_target_tsv=f"{SIM}/{{envrun}}/ligand_target.tsv",
    log:
        f"{LOGS}/simulate/{{envrun}}.log",
    benchmark:
        f"{BENCH}/simulate/{{envrun}}.tsv"
    wildcard_constraints:
        envrun=ENV_RUNS,
    conda:
        "../envs/spatial.yaml"
    params:
        sim=env_sim_params,
    script:
        "../workflow_scripts/simulate_environment.py"


rule deepcolor_environment:
    input:
        reference=f"{SIM}/{{envrun}}/reference.h5ad",
        spots=f"{SIM}/{{envrun}}/spots.h5ad",
    output:
        model_dir=directory(f"{SP}/{{envrun}}/model"),
        cells_h5ad=f"{SP}/{{envrun}}/deepcolor.h5ad",
        p_mat=f"{SP}/{{envrun}}/p_mat.npy",
        mapped_spots=f"{SP}/{{envrun}}/spots_mapped.h5ad",
    log:
        f"{LOGS}/spatial/deepcolor_{{envrun}}.log",
    benchmark:
        f"{BENCH}/spatial/deepcolor_{{envrun}}.tsv"
    wildcard_constraints:
        envrun=ENV_RUNS,
    conda:
        "../envs/spatial.yaml"
    threads: SPATIAL.get("threads", 1)
    resources:
        gpu=int(str(SPATIAL.get("device", "cpu")).startswith("cuda")),
        mem_mb=mem_deepcolor,
    params:
        cfg=spatial_params("device", "deepcolor"),
    script:
        "../workflow_scripts/deepcolor.py"


rule environment_dynamics:
    input:
        unpack(env_source),
    output:
        modes=f"{SP}/{{envrun}}_modes.tsv",
        genes=f"{SP}/{{envrun}}_genes.tsv",
        ligands=f"{SP}/{{envrun}}_ligands.tsv",
    log:
        f"{LOGS}/spatial/{{envrun}}_dynamics.log",
    benchmark:
        f"{BENCH}/spatial/{{envrun}}_dynamics.tsv"
    wildcard_constraints:
        envrun=ENV_RUNS,
    conda:
        "../envs/spatial.yaml"
    threads: SPATIAL.get("threads", 1)
    params:
        cfg=spatial_params("device", "environment"),
    script:
        "../workflow_scripts/environment_dynamics.py"


rule spatial_validation:
    input:
        cells=f"{SP}/deepcolor.h5ad",
        p_mat=f"{SP}/p_mat.npy",
        types=f"{SP}/colocalization_types.tsv",
        spots=f"{SIM}/tissue/spots.h5ad",
        modes=f"{SP}/environment_modes.tsv",
        negative_modes=f"{SP}/environment_negative_modes.tsv",
        forward=f"{SP}/forward_shifts.tsv",
    output:
        f"{SP}/validation.tsv",
    log:
        f"{LOGS}/spatial/validation.log",
    benchmark:
        f"{BENCH}/spatial/validation.tsv"
    conda:
        "../envs/spatial.yaml"
    params:
        cfg=spatial_params(),
    script:
        "../workflow_scripts/spatial_validation.py"


rule figure_deepcolor_maps:
    input:
        spots=f"{SP}/spots_mapped.h5ad",
    output:
        report(
            f"{RESULTS}/figures/deepcolor_maps.png",
            caption="../report/deepcolor_maps.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/deepcolor_maps.log",
    benchmark:
        f"{BENCH}/figures/deepcolor_maps.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_deepcolor_maps.py"


rule figure_colocalization_heatmap:
    input:
        types=f"{SP}/colocalization_types.tsv",
    output:
        report(
            f"{RESULTS}/figures/colocalization_heatmap.png",
            caption="../report/colocalization_heatmap.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/colocalization_heatmap.log",
    benchmark:
        f"{BENCH}/figures/colocalization_heatmap.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_colocalization_heatmap.py"


rule figure_pair_clusters_umap:
    input:
        pairs=f"{SP}/pair_clusters.tsv",
    output:
        report(
            f"{RESULTS}/figures/pair_clusters_umap.png",
            caption="../report/pair_clusters_umap.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/pair_clusters_umap.log",
    benchmark:
        f"{BENCH}/figures/pair_clusters_umap.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_pair_clusters_umap.py"


rule figure_ligand_activity:
    input:
        ligands=f"{SP}/ligand_activity.tsv",
    output:
        report(
            f"{RESULTS}/figures/ligand_activity.png",
            caption="../report/ligand_activity.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/ligand_activity.log",
    benchmark:
        f"{BENCH}/figures/ligand_activity.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_ligand_activity.py"


rule figure_environment_dynamics:
    input:
        modes=f"{SP}/environment_modes.tsv",
        genes=f"{SP}/environment_genes.tsv",
        ligands=f"{SP}/environment_ligands.tsv",
    output:
        report(
            f"{RESULTS}/figures/environment_dynamics.png",
            caption="../report/environment_dynamics.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/environment_dynamics.log",
    benchmark:
        f"{BENCH}/figures/environment_dynamics.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_environment_dynamics.py"


rule figure_spatial_validation:
    input:
        mapped=f"{SP}/spots_mapped.h5ad",
        truth=f"{SIM}/tissue/spots.h5ad",
        types=f"{SP}/colocalization_types.tsv",
        validation=f"{SP}/validation.tsv",
    output:
        report(
            f"{RESULTS}/figures/spatial_validation.png",
            caption="../report/spatial_validation.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/spatial_validation.log",
    benchmark:
        f"{BENCH}/figures/spatial_validation.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_spatial_validation.py"


rule forward_analysis:
    input:
        **FORWARD_SOURCE,
    output:
        table=f"{SP}/forward_shifts.tsv",
        cells=f"{SP}/forward_cells.tsv",
    log:
        f"{LOGS}/spatial/forward_analysis.log",
    benchmark:
        f"{BENCH}/spatial/forward_analysis.tsv"
    conda:
        "../envs/spatial.yaml"
    threads: SPATIAL.get("threads", 1)
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
    params:
        cfg=spatial_params("environment", "forward"),
        sim=sim_params("environment") if SIMULATED else None,
    script:
        "../workflow_scripts/forward_analysis.py"


rule figure_forward_shifts:
    input:
        table=f"{SP}/forward_shifts.tsv",
    output:
        report(
            f"{RESULTS}/figures/forward_shifts.png",
            caption="../report/forward_shifts.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/forward_shifts.log",
    benchmark:
        f"{BENCH}/figures/forward_shifts.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_forward_shifts.py"


rule figure_forward_decomposition:
    input:
        cells=f"{SP}/forward_cells.tsv",
    output:
        report(
            f"{RESULTS}/figures/forward_decomposition.png",
            caption="../report/forward_decomposition.rst",
            category="Spatial (DeepCOLOR)",
        ),
    log:
        f"{LOGS}/figures/forward_decomposition.log",
    benchmark:
        f"{BENCH}/figures/forward_decomposition.tsv"
    conda:
        "../envs/spatial.yaml"
    script:
        "../workflow_scripts/figure_forward_decomposition.py"
