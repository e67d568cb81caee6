"""DeepCOLOR with AnnData in and out: input checks, gene matching, fit, outputs, save/load.

The torch module (:mod:`cellfate.spatial.module`) sees only tensors and the training loop
(:mod:`cellfate.spatial.train`) only the module; this class owns the registry of genes and spots
and turns the trained module into the named outputs (``X_zl``, ``map2sp``, ``p_mat``, per-type
maps, imputed spot expression). ``save``/``load`` round-trip exactly.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellfate.counts import check_count_values
from cellfate.errors import CellfateError
from cellfate.io import atomic_path
from cellfate.nn.device import resolve_device
from cellfate.spatial import train as training
from cellfate.spatial.module import DeepColorModule, ModuleConfig

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DeepColorConfig:
    """Everything that defines a fit: gene filter, network sizes and training."""

    min_gene_counts: int = 10
    n_latent: int = 10
    n_hidden: int = 50
    likelihood: str = "nb"
    n_expression_pcs: int = 20  # see cellfate.spatial.module: 0 and map_rate "decoded" give the original
    map_rate: str = "observed"
    # within-type components the map head reads besides the global ones (0: none). Needs the
    # cells' types in obs[type_key] when fitting and when mapping (see DeepColorModule.init_type_pcs)
    n_type_pcs: int = 0
    type_key: str = "cell_type"
    train: training.TrainConfig = field(default_factory=training.TrainConfig)

    @classmethod
    def from_dict(cls, values: dict) -> DeepColorConfig:
        """From the config's ``spatial.deepcolor`` block; training keys may sit at the top level."""
        own = {f.name for f in fields(cls)} - {"train"}
        train_keys = {f.name for f in fields(training.TrainConfig)}
        unknown = set(values) - own - train_keys - {"train"}
        if unknown:
            raise CellfateError(f"unknown DeepCOLOR settings {sorted(unknown)}")
        train_values = {**values.get("train", {}), **{k: v for k, v in values.items() if k in train_keys}}
        return cls(**{k: v for k, v in values.items() if k in own}, train=training.TrainConfig(**train_values))

    def to_dict(self) -> dict:
        return asdict(self)


def counts_matrix(adata: ad.AnnData, path: PathLike | None, what: str) -> sp.csr_matrix:
    """The raw counts (``layers['counts']`` if present, else ``X``) as CSR, checked to be counts."""
    x = adata.layers["counts"] if "counts" in adata.layers else adata.X
    x = sp.csr_matrix(x)
    check_count_values(x.data, f"{what} counts", path)
    return x


@dataclass
class MatchedInputs:
    """Cells and spots restricted to the shared, sufficiently counted genes, in the same order."""

    cells: sp.csr_matrix
    spots: sp.csr_matrix
    genes: pd.Index
    cell_names: pd.Index
    spot_names: pd.Index


def match_inputs(cells: ad.AnnData, spots: ad.AnnData, min_gene_counts: int = 10,
                 cells_path: PathLike | None = None, spots_path: PathLike | None = None,
                 genes: pd.Index | None = None) -> MatchedInputs:
    """Check both count matrices and keep the genes counted in both (or exactly ``genes``).

    Errors name the offending file: genes not shared, non-integer counts, empty spots or cells.
    """
    for adata, path, what in ((cells, cells_path, "single-cell"), (spots, spots_path, "spot")):
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise CellfateError(f"the {what} matrix is empty ({adata.n_obs} x {adata.n_vars})", path)
        if adata.var_names.duplicated().any():
            raise CellfateError(f"duplicate gene names in the {what} data, e.g. {adata.var_names[adata.var_names.duplicated()][0]!r}", path)
    x_cells = counts_matrix(cells, cells_path, "single-cell")
    x_spots = counts_matrix(spots, spots_path, "spot")
    shared = cells.var_names.intersection(spots.var_names, sort=False)
    if len(shared) == 0:
        raise CellfateError(f"no gene is shared with {cells_path or 'the single-cell data'} "
                            f"(e.g. {cells.var_names[0]!r} vs {spots.var_names[0]!r}); both must use the same gene ids", spots_path)
    if genes is None:
        c_tot = np.asarray(x_cells[:, cells.var_names.get_indexer(shared)].sum(0)).ravel()
        s_tot = np.asarray(x_spots[:, spots.var_names.get_indexer(shared)].sum(0)).ravel()
        genes = shared[(c_tot >= min_gene_counts) & (s_tot >= min_gene_counts)]
        if len(genes) < 10:
            raise CellfateError(f"only {len(genes)} of {len(shared)} shared genes have >= {min_gene_counts} counts in both "
                                f"the spots and {cells_path or 'the single cells'}; DeepCOLOR needs at least 10", spots_path)
        log.info("%d genes shared, %d kept with >= %d counts in both", len(shared), len(genes), min_gene_counts)
    else:
        missing = pd.Index(genes).difference(shared)
        if len(missing):
            raise CellfateError(f"{len(missing)} genes of the model are missing, e.g. {missing[0]!r}", spots_path)
    x_cells = x_cells[:, cells.var_names.get_indexer(genes)]
    x_spots = x_spots[:, spots.var_names.get_indexer(genes)]
    for x, names, path, what in ((x_spots, spots.obs_names, spots_path, "spots"), (x_cells, cells.obs_names, cells_path, "cells")):
        empty = np.flatnonzero(np.asarray(x.sum(1)).ravel() == 0)
        if len(empty):
            raise CellfateError(f"{len(empty)} {what} have no counts over the {len(genes)} genes used "
                                f"(e.g. {names[empty[0]]!r}); remove them before mapping", path)
    return MatchedInputs(x_cells, x_spots, pd.Index(genes), cells.obs_names, spots.obs_names)


class DeepColor:
    """A DeepCOLOR model: fit on (cells, spots), then read its outputs for any cells."""

    def __init__(self, config: DeepColorConfig, genes: pd.Index, spot_names: pd.Index,
                 module: DeepColorModule | None = None, history: list[dict] | None = None,
                 type_names: list[str] | None = None) -> None:
        self.config = config
        self.genes = pd.Index(genes)
        self.spot_names = pd.Index(spot_names)
        self.module = module or DeepColorModule(ModuleConfig(
            n_genes=len(genes), n_spots=len(spot_names), n_latent=config.n_latent,
            n_hidden=config.n_hidden, spatial_likelihood=config.likelihood,
            n_expression_pcs=config.n_expression_pcs, map_rate=config.map_rate,
            n_type_pcs=config.n_type_pcs, type_names=tuple(type_names or ())))
        self.history = history or []
        self.device = next(self.module.parameters()).device

    # --- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, cells: ad.AnnData, spots: ad.AnnData, config: DeepColorConfig | None = None,
            cells_path: PathLike | None = None, spots_path: PathLike | None = None,
            device: str = "cpu") -> DeepColor:
        """Match genes, build the module and run both training phases."""
        config = config or DeepColorConfig()
        data = match_inputs(cells, spots, config.min_gene_counts, cells_path, spots_path)
        torch.manual_seed(config.train.seed)
        types = sorted(set(_type_labels(cells, config, cells_path))) if config.n_type_pcs else None
        model = cls(config, data.genes, data.spot_names, type_names=types)
        model.device = resolve_device(device)
        model.module.to(model.device)
        rows = training.Rows(data.cells, model.device, codes=model._type_codes(cells, cells_path))
        spot_x = torch.as_tensor(data.spots.toarray(), dtype=torch.float32, device=model.device)
        log.info("fitting DeepCOLOR: %d cells, %d spots, %d genes", data.cells.shape[0], spot_x.shape[0], len(data.genes))
        model.history = training.fit(model.module, rows, spot_x, config.train)
        return model

    # --- outputs ---------------------------------------------------------------------------
    def _rows(self, cells: ad.AnnData) -> training.Rows:
        missing = self.genes.difference(cells.var_names)
        if len(missing):
            raise CellfateError(f"{len(missing)} genes of the model are missing from the cells, e.g. {missing[0]!r}")
        x = counts_matrix(cells, None, "single-cell")[:, cells.var_names.get_indexer(self.genes)]
        return training.Rows(x, self.device, codes=self._type_codes(cells))

    def _type_codes(self, cells: ad.AnnData, path: PathLike | None = None) -> np.ndarray | None:
        """Each cell's index in the model's types (-1: a type it was not fitted on), when the map
        head reads within-type components; else None."""
        if not self.module.config.n_type_pcs:
            return None
        return pd.Index(self.module.config.type_names).get_indexer(_type_labels(cells, self.config, path))

    def latent(self, cells: ad.AnnData) -> np.ndarray:
        """Posterior mean of z (``X_zl``), cells x latent."""
        return training.posterior(self.module, self._rows(cells))[0].cpu().numpy()

    def expression(self, zl: np.ndarray) -> np.ndarray:
        """Decoded expression lambda(z) (relative to a cell's mean count), cells x genes."""
        z = torch.as_tensor(zl, dtype=torch.float32, device=self.device)
        return training.decode(self.module, z).cpu().numpy()

    def map_inputs(self, cells: ad.AnnData, zl: np.ndarray | None = None) -> np.ndarray:
        """What the map head reads per cell: z (``zl``, computed if not given) and the cell's
        expression components; cells x (latent + components)."""
        rows = self._rows(cells)
        z = training.posterior(self.module, rows)[0] if zl is None else torch.as_tensor(zl, dtype=torch.float32,
                                                                                          device=self.device)
        return training.map_inputs(self.module, rows, z).cpu().numpy()

    @torch.no_grad()
    def map2sp_blocks(self, features: np.ndarray, chunk: int = 4096) -> Iterator[tuple[slice, np.ndarray]]:
        """Rows of :meth:`map2sp`, ``chunk`` cells at a time (a new float32 array each): for
        outputs that must never hold all cells x spots at once."""
        self.module.eval()
        z = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        totals = training.map_totals(self.module, z, chunk)
        for i in range(0, len(z), chunk):
            yield slice(i, min(i + chunk, len(z))), (self.module.map_scores(z[i:i + chunk]) / totals).cpu().numpy()

    def map2sp(self, features: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Cells x spots from :meth:`map_inputs`: each spot's share of every cell (columns sum to 1
        over all cells)."""
        out = np.empty((len(features), len(self.spot_names)), dtype=np.float32)
        for rows, block in self.map2sp_blocks(features, chunk):
            out[rows] = block
        return out

    def gene_scale(self) -> np.ndarray:
        """The per-gene scale the spot mixtures are multiplied by."""
        return torch.nn.functional.softplus(self.module.raw_gene_scale).detach().cpu().numpy()

    @torch.no_grad()
    def imputed(self, zl: np.ndarray, map2sp: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Spots x genes: each spot's mixture of decoded cell expression times the gene scale."""
        out = np.zeros((map2sp.shape[1], len(self.genes)), dtype=np.float64)
        for i in range(0, len(zl), chunk):
            out += map2sp[i:i + chunk].T.astype(np.float64) @ self.expression(zl[i:i + chunk])
        return (out * self.gene_scale()).astype(np.float32)

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """A folder with config.json, genes.txt, spots.txt, module.pt and history.tsv (atomic)."""
        with atomic_path(path, is_dir=True) as tmp:
            (tmp / "config.json").write_text(json.dumps({"deepcolor": self.config.to_dict(),
                                                         "module": self.module.config.to_dict()}, indent=2))
            (tmp / "genes.txt").write_text("\n".join(self.genes) + "\n")
            (tmp / "spots.txt").write_text("\n".join(self.spot_names) + "\n")
            torch.save({k: v.cpu() for k, v in self.module.state_dict().items()}, tmp / "module.pt")
            pd.DataFrame(self.history).to_csv(tmp / "history.tsv", sep="\t", index=False)

    @classmethod
    def load(cls, path: PathLike, device: str = "cpu") -> DeepColor:
        """Rebuild a saved model exactly."""
        path = Path(path)
        if not (path / "module.pt").exists():
            raise CellfateError("not a saved DeepCOLOR model (no module.pt)", path)
        meta = json.loads((path / "config.json").read_text())
        config = DeepColorConfig.from_dict(meta["deepcolor"])
        types = tuple(meta["module"].get("type_names", ()))  # JSON gives a list
        module = DeepColorModule(ModuleConfig(**{**meta["module"], "type_names": types}))
        where = resolve_device(device)
        module.load_state_dict(torch.load(path / "module.pt", map_location=where, weights_only=True))
        module.to(where).eval()
        genes = pd.Index((path / "genes.txt").read_text().split("\n")[:-1])
        spots = pd.Index((path / "spots.txt").read_text().split("\n")[:-1])
        history_file = path / "history.tsv"
        history = pd.read_csv(history_file, sep="\t").to_dict("records") if history_file.stat().st_size > 1 else []
        return cls(config, genes, spots, module=module, history=history)


def _type_labels(cells: ad.AnnData, config: DeepColorConfig, path: PathLike | None = None) -> np.ndarray:
    """The cells' type labels (obs[config.type_key]) as strings; missing: a one-line error."""
    if config.type_key not in cells.obs:
        raise CellfateError(f"no obs column {config.type_key!r} with the cell types, which the map head's "
                            "within-type components (n_type_pcs) need", path)
    return cells.obs[config.type_key].astype(str).to_numpy()


def p_mat_from_map2sp(map2sp: np.ndarray) -> np.ndarray:
    """Each cell's distribution over spots: ``map2sp`` normalised over spots (rows sum to 1).

    Assumes spots hold similar numbers of cells: the share of spot s that is cell c is then
    proportional to the chance that c sits in s.
    """
    return map2sp / np.maximum(map2sp.sum(1, keepdims=True), 1e-30)


def type_indicator(labels: pd.Series | np.ndarray) -> tuple[list[str], sp.csr_matrix]:
    """Sorted type names and the cells x types 0/1 indicator."""
    cat = pd.Categorical(np.asarray(labels, dtype=str))
    types = list(cat.categories)
    ind = sp.csr_matrix((np.ones(len(cat)), (np.arange(len(cat)), cat.codes)), shape=(len(cat), len(types)))
    return types, ind


def type_shares(map2sp: np.ndarray, labels: pd.Series | np.ndarray) -> pd.DataFrame:
    """Spots x types: the share of each spot explained by each type's cells (rows sum to 1)."""
    types, ind = type_indicator(labels)
    return pd.DataFrame(np.asarray(ind.T @ map2sp).T, columns=types)


def type_shares_from_p(p_mat: np.ndarray, map_total: np.ndarray, labels: pd.Series | np.ndarray,
                       chunk: int = 4096) -> pd.DataFrame:
    """:func:`type_shares` from p_mat (e.g. memory-mapped) and the row totals, a block at a time."""
    types, ind = type_indicator(labels)
    sums = np.zeros((p_mat.shape[1], len(types)))
    for i in range(0, len(p_mat), chunk):
        block = np.asarray(p_mat[i:i + chunk], dtype=np.float64) * map_total[i:i + chunk, None]
        sums += np.asarray(ind[i:i + chunk].T @ block).T
    return pd.DataFrame(sums, columns=types)


def type_distributions(p_mat: np.ndarray, labels: pd.Series | np.ndarray) -> pd.DataFrame:
    """Spots x types: each type's spatial distribution (mean of its cells' p_mat; columns sum to 1)."""
    types, ind = type_indicator(labels)
    sums = np.asarray(ind.T @ p_mat).T
    return pd.DataFrame(sums / np.maximum(sums.sum(0, keepdims=True), 1e-30), columns=types)
