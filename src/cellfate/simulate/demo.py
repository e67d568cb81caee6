"""Writers for the demo's simulated inputs: one function per workflow rule.

Each function takes the sample-sheet row and the ``simulate`` config block, simulates with the
seeded simulators and writes the source files plus a truth table, so the rest of the DAG sees
exactly what a download of the real source would give.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellfate.io import write_h5ad, write_table, write_text
from cellfate.simulate import source_formats
from cellfate.simulate.bam import write_velocyto_inputs
from cellfate.simulate.bifurcation import BifurcationSpec, lineage_corpus_cells, simulate_bifurcation
from cellfate.simulate.corpus import add_duplicates, corpus_model, simulate_sample, tissue_cell_types, truth_table
from cellfate.simulate.tissue import TissueSpec, simulate_tissue

Config = Mapping[str, Any]


def _all_cell_types(corpus: Config) -> list[str]:
    return sorted({t for types in corpus["tissues"].values() for t in types})


def _simulate(row: Mapping[str, Any], sim: Config, source: str | None = None):
    corpus = sim["corpus"]
    model = corpus_model(_all_cell_types(corpus), corpus["n_genes"], sim["seed"])
    types = tissue_cell_types(corpus["tissues"], row["tissue"])
    # each source's protocol: depth, capture, gene bias (cellfate.simulate.corpus.SOURCE_TECHNOLOGY)
    adata = simulate_sample(model, row["sample_id"], types, int(row["sim_n_cells"]), sim["seed"], source=source)
    return adata, types


def panglaodb_sample(row: Config, sim: Config, rdata: str, clusters: str, truth: str) -> None:
    """One PanglaoDB sample: ``.RData`` with ``sm``, its cluster file and its truth table."""
    adata, types = _simulate(row, sim, "panglaodb")
    source_formats.write_panglaodb_sample(adata, types, rdata, clusters)
    write_table(truth_table(adata), truth)


def panglaodb_tables(rows: list[Config], sim: Config, metadata: str, annotations: str) -> None:
    """PanglaoDB's ``metadata.txt`` and ``cell_type_annotations.txt`` for the simulated samples."""
    samples = [dict(row, cell_types=tissue_cell_types(sim["corpus"]["tissues"], row["tissue"])) for row in rows]
    source_formats.write_panglaodb_tables(samples, metadata, annotations)


def expression_atlas_experiment(row: Config, sim: Config, archive: str, design: str, truth: str) -> None:
    """One Expression Atlas experiment: the quantification-raw zip, the design TSV, the truth."""
    adata, _ = _simulate(row, sim, "expression_atlas")
    source_formats.write_expression_atlas_experiment(adata, row["accession"], row["tissue"], archive, design)
    write_table(truth_table(adata), truth)


def cellxgene_dataset(row: Config, sim: Config, donor_row: Config | None, h5ad: str, truth: str) -> None:
    """One CELLxGENE dataset h5ad; with a donor sample, some of its cells are re-hosted copies."""
    adata, _ = _simulate(row, sim, "cellxgene")
    if donor_row is not None and int(row.get("sim_n_duplicates") or 0) > 0:
        donor, _ = _simulate(donor_row, sim, "panglaodb")  # the copies are the donor's own cells
        adata = add_duplicates(adata, donor, int(row["sim_n_duplicates"]), donor_row["sample_id"], sim["seed"])
    source_formats.write_cellxgene_dataset(adata, row["dataset_id"], row["tissue"], h5ad)
    write_table(truth_table(adata), truth)


def bifurcation(sim: Config, truth: str, bam: str, gtf: str, barcodes: str) -> None:
    """The differentiation's truth h5ad and the 10x-style BAM + GTF that encode its counts."""
    spec = BifurcationSpec(seed=sim["seed"], **sim.get("bifurcation", {}))
    adata = simulate_bifurcation(spec)
    write_velocyto_inputs(
        np.asarray(adata.layers["spliced"]), np.asarray(adata.layers["unspliced"]), list(adata.obs["barcode"]),
        list(adata.var_names), list(adata.var["symbol"]), bam, gtf, barcodes, seed=sim["seed"],
    )
    write_h5ad(adata, truth)


def tissue(sim: Config, spots: str, reference: str) -> None:
    """The spatial spots and the independent single-cell reference."""
    cfg = dict(sim.get("tissue", {}))
    if "grid" in cfg:
        cfg["grid"] = tuple(cfg["grid"])
    spot_data, reference_data = simulate_tissue(TissueSpec(seed=sim["seed"], **cfg))
    write_h5ad(spot_data, spots)
    write_h5ad(reference_data, reference)


def cellxgene_listing(rows: list[Config], h5ads: list[str], listing: str) -> None:
    """A curation-API ``/datasets`` listing whose H5AD assets are the simulated files (file:// URLs)."""
    entries = []
    for row, path in zip(rows, h5ads, strict=True):
        h5ad = Path(path).resolve()
        entries.append(
            {
                "collection_id": "00000000-0000-0000-0000-00000000c011",
                "dataset_id": row["dataset_id"],
                "dataset_version_id": row["dataset_id"],
                "title": f"Simulated mouse {row['tissue']}",
                "organism": [{"label": "Mus musculus", "ontology_term_id": "NCBITaxon:10090"}],
                "assets": [{"filetype": "H5AD", "filesize": h5ad.stat().st_size, "url": h5ad.as_uri()}],
            }
        )
    write_text(listing, json.dumps(entries, indent=1) + "\n")


def lineage_corpus(sim: Config, out: str) -> None:
    """Fresh cells of the demo's lineage (``simulate.lineage_corpus_cells``) for the pretraining corpus."""
    spec = BifurcationSpec(seed=sim["seed"], **sim.get("bifurcation", {}))
    write_h5ad(lineage_corpus_cells(spec, int(sim["lineage_corpus_cells"])), out)
