"""VICDYF on AnnData: checks the counts, trains, writes the results under the original's keys, saves.

The torch module (:mod:`~cellfate.dynamics.module`) knows nothing about AnnData and the loop
(:mod:`~cellfate.dynamics.train`) nothing about genes; this class owns both ends: which layers
hold the counts (its registry), the gene order a saved model expects, and every key it writes
(:data:`OUTPUT_KEYS`, named as ``vicdyf`` 0.0.8 names them so its users find them).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellfate.counts import check_count_values, dense
from cellfate.dynamics.module import VicdyfConfig, VicdyfModule
from cellfate.dynamics.train import CountTensors, TrainingPlan, train
from cellfate.errors import CellfateError
from cellfate.io import atomic_path
from cellfate.nn.device import resolve_device

log = logging.getLogger(__name__)

#: Fewer cells than this cannot give a training set, a held-out set and a batch.
MIN_CELLS = 20
#: Every key VICDYF writes, where, and what it holds (vicdyf 0.0.8's names).
OUTPUT_KEYS: dict[str, dict[str, str]] = {
    "layers": {
        "vicdyf_expression": "expected spliced expression dec(z_mean), in units of the size-factor matrix N",
        "vicdyf_velocity": "dec(z_mean + d) - dec(z_mean) for one sampled displacement d",
        "vicdyf_mean_velocity": "mean over n_samples sampled d of dec(z_mean + d) - dec(z_mean)",
        "vicdyf_fluctuation": "standard deviation over the same samples: the gene's fluctuation",
    },
    "obs": {
        "vicdyf_fluctuation": "gene-mean of layer vicdyf_fluctuation",
        "vicdyf_velocity": "gene-mean of |layer vicdyf_velocity|",
        "vicdyf_mean_velocity": "gene-mean of |layer vicdyf_mean_velocity|",
    },
    "obsm": {
        "X_vicdyf_z": "a latent state sampled from q(z|s)",
        "X_vicdyf_zl": "the latent posterior mean",
        "X_vicdyf_d": "a displacement d = d_scale * d~ sampled from q(d~|z_mean)",
        "X_vicdyf_dl": "the expected displacement d_scale * drift(z_mean)",
        "X_vicdyf_diffusion": "d_scale * diffusion(z_mean): the standard deviation of d per latent axis (ours)",
        "X_vicdyf_umap": "2-D UMAP of X_vicdyf_zl",
        "X_vicdyf_sdumap": "X_vicdyf_d as arrows on X_vicdyf_umap (kNN transition, no N x N matrix)",
        "X_vicdyf_mdumap": "X_vicdyf_dl as arrows on X_vicdyf_umap (kNN transition, no N x N matrix)",
        "velocity_vicdyf_umap": "X_vicdyf_mdumap under scVelo's key velocity_<basis> (basis vicdyf_umap)",
    },
    "var": {
        "vicdyf_used": "the gene was modelled (True for every gene of this AnnData)",
        "vicdyf_beta": "splicing rate beta",
        "vicdyf_gamma": "degradation rate gamma",
        "vicdyf_gene_scale": "gene factor of N: multiply a layer by it (and a cell's library) for counts",
    },
    "uns": {"vicdyf": "model and training settings, and the output key registry",
            "vicdyf_umap": "the UMAP's settings under params, where scanpy keeps its own",
            "velocity_params": "scVelo's record of the embeddings that carry arrows"},
}

#: Receives an output layer batch by batch: (key, first cell, cells x genes block).
LayerSink = Callable[[str, int, np.ndarray], None]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
HISTORY_FILE = "history.tsv"


def checked_layer(adata: ad.AnnData, layer: str, source: str | None = None) -> Any:
    """A layer as stored (dense or sparse, no copy) once its values are whole, non-negative, finite counts."""
    if layer not in adata.layers:
        raise CellfateError(
            f"the AnnData has no layer {layer!r} (layers: {sorted(adata.layers)}); VICDYF needs raw spliced and "
            "unspliced counts, e.g. from velocyto", source)
    matrix = adata.layers[layer]
    check_count_values(matrix.data if sp.issparse(matrix) else np.asarray(matrix), f"layer {layer!r}", source)
    return matrix


def count_layer(adata: ad.AnnData, layer: str, source: str | None = None) -> np.ndarray:
    """A layer as a dense float32 array of whole, non-negative, finite counts, or a clear error."""
    matrix = checked_layer(adata, layer, source)
    return dense(matrix, dtype=None).astype(np.float32)  # a copy: the model does not share the AnnData's memory


class VICDYF:
    """Variational inference of cell-state dynamics with fluctuation, on an AnnData.

    ``adata`` holds raw counts in ``spliced_layer`` and ``unspliced_layer`` (cells x genes, the
    genes to model: see :func:`cellfate.dynamics.preprocess.select_genes`). Typical use::

        model = VICDYF(adata)
        model.train(TrainingPlan(epochs_phase1=500, epochs_phase2=500))
        model.annotate(adata)          # writes the OUTPUT_KEYS
        model.save("model_dir")
        model = VICDYF.load("model_dir", adata)
    """

    def __init__(self, adata: ad.AnnData, *, spliced_layer: str = "spliced", unspliced_layer: str = "unspliced",
                 n_latent: int = 10, n_hidden: int = 50, n_layers: int = 2, likelihood: str = "poisson",
                 velocity: str = "jvp", d_scale: float = 0.01, beta_init: float | None = 0.1,
                 diffusion: str = "posterior", seed: int = 42, source: str | None = None) -> None:
        if adata.n_obs < MIN_CELLS:
            raise CellfateError(f"only {adata.n_obs} cells; VICDYF needs at least {MIN_CELLS}", source)
        if beta_init is not None and not beta_init > 0:
            raise CellfateError(f"beta_init must be a positive splicing rate or None, got {beta_init}", source)
        if adata.n_vars < 2:
            raise CellfateError(f"only {adata.n_vars} gene(s); VICDYF needs at least 2", source)
        if adata.var_names.has_duplicates:
            raise CellfateError(f"gene {adata.var_names[adata.var_names.duplicated()][0]!r} appears twice", source)
        spliced = count_layer(adata, spliced_layer, source)
        unspliced = count_layer(adata, unspliced_layer, source)
        empty_genes = np.flatnonzero(spliced.sum(0) == 0)
        if empty_genes.size:
            raise CellfateError(
                f"{empty_genes.size} gene(s) have no spliced counts (e.g. {adata.var_names[empty_genes[0]]!r}); "
                "filter genes first (cellfate.dynamics.preprocess.select_genes)", source)
        empty_cells = np.flatnonzero(spliced.sum(1) == 0)
        if empty_cells.size:
            raise CellfateError(
                f"{empty_cells.size} cell(s) have no spliced counts (e.g. {adata.obs_names[empty_cells[0]]!r}); "
                "filter cells first", source)
        try:
            self.config = VicdyfConfig(n_genes=adata.n_vars, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers,
                                       likelihood=likelihood, velocity=velocity, d_scale=d_scale,
                                       diffusion=diffusion)
        except ValueError as err:
            raise CellfateError(str(err), source) from None
        self.registry = {"spliced_layer": spliced_layer, "unspliced_layer": unspliced_layer,
                         "genes": [str(g) for g in adata.var_names]}
        self.adata = adata
        self.data = CountTensors.from_arrays(spliced, unspliced)
        # the initial weights come from `seed`, not from whatever the process drew before
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = VicdyfModule(self.config)
        if beta_init:  # start the kinetics at steady state (see VicdyfModule.init_kinetics)
            self.module.init_kinetics(self.data.unspliced.sum(0) / self.data.spliced.sum(0), beta_init)
        self.history = pd.DataFrame()
        self.plan: TrainingPlan | None = None

    # -- training -------------------------------------------------------------------------

    def train(self, plan: TrainingPlan | None = None, **overrides: Any) -> pd.DataFrame:
        """Fit the model (see :class:`TrainingPlan`; keyword arguments override its fields)."""
        plan = plan or TrainingPlan()
        for key, value in overrides.items():
            if not hasattr(plan, key):
                raise TypeError(f"unknown training setting {key!r}")
            setattr(plan, key, value)
        self.plan = plan
        if self.data.log_spliced is None:
            self.data.log_spliced = torch.log1p(self.data.spliced)
        records = train(self.module, self.data, plan)
        # only training reads log1p(s); released, it is one cells x genes array fewer beside the outputs
        self.data.log_spliced = None
        self.history = pd.concat([self.history, pd.DataFrame.from_records(records)], ignore_index=True)
        return self.history

    # -- inference ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def posterior_batches(self, n_samples: int = 10, seed: int = 0,
                          batch_size: int = 512) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Every per-cell output of VICDYF (see :data:`OUTPUT_KEYS`), ``batch_size`` cells at a time:
        (first cell, arrays). The draws are those of :meth:`posterior` with the same seed."""
        if n_samples < 2:
            raise CellfateError(f"n_samples must be at least 2 to estimate a fluctuation, got {n_samples}")
        module = self.module.eval()
        gen = torch.Generator(device=self.device).manual_seed(seed)
        scale = self.config.d_scale
        for start in range(0, self.data.n_cells, batch_size):
            s = self.data.spliced[start:start + batch_size].to(self.device)
            z_mean, z_sd = module.encode(s)
            z = z_mean + z_sd * torch.randn(z_sd.shape, generator=gen, device=self.device)
            drift, diffusion = module.dynamics_posterior(z_mean)
            noise = torch.randn((n_samples, *drift.shape), generator=gen, device=self.device)
            d = scale * (drift + diffusion * noise)  # samples x cells x latent
            base = module.decoder(z_mean)
            vel = module.decoder(z_mean + d) - base  # samples x cells x genes
            parts = {"X_vicdyf_z": z, "X_vicdyf_zl": z_mean, "X_vicdyf_d": d[0], "X_vicdyf_dl": scale * drift,
                     "vicdyf_expression": base, "vicdyf_velocity": vel[0], "vicdyf_mean_velocity": vel.mean(0),
                     "vicdyf_fluctuation": vel.std(0), "diffusion": scale * diffusion}
            yield start, {key: value.cpu().numpy() for key, value in parts.items()}

    def posterior(self, n_samples: int = 10, seed: int = 0, batch_size: int = 512) -> dict[str, np.ndarray]:
        """Every per-cell output of VICDYF, as arrays (see :data:`OUTPUT_KEYS`)."""
        return self._gather(self.posterior_batches(n_samples, seed, batch_size))

    def _gather(self, batches: Iterator[tuple[int, dict[str, np.ndarray]]],
                layers: LayerSink | None = None) -> dict[str, np.ndarray]:
        """The batches' arrays written into whole arrays (a list of pieces joined at the end held each
        cells x genes output twice), except the layers, which go to ``layers`` when given, and the
        per-cell gene-means of the layers that ``obs`` holds (``obs:<key>``), taken batch by batch."""
        out: dict[str, np.ndarray] = {}
        for start, parts in batches:
            parts["obs:vicdyf_fluctuation"] = parts["vicdyf_fluctuation"].mean(1)
            for key in ("vicdyf_velocity", "vicdyf_mean_velocity"):
                parts[f"obs:{key}"] = np.abs(parts[key]).mean(1)
            for key, value in parts.items():
                if layers is not None and key in OUTPUT_KEYS["layers"]:
                    layers(key, start, value)
                    continue
                if key not in out:
                    out[key] = np.empty((self.data.n_cells, *value.shape[1:]), dtype=np.float32)
                out[key][start:start + len(value)] = value
        return out

    @torch.no_grad()
    def velocity_along(self, z: np.ndarray, directions: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """J_dec(z) v per cell: the expression change along latent direction v (exact, by JVP)."""
        module = self.module.eval()
        chunks = []
        for start in range(0, len(z), batch_size):
            zt = torch.as_tensor(z[start:start + batch_size], dtype=torch.float32, device=self.device)
            vt = torch.as_tensor(directions[start:start + batch_size], dtype=torch.float32, device=self.device)
            chunks.append(torch.func.jvp(module.decoder, (zt,), (vt,))[1].cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.config.n_genes), dtype=np.float32)

    def annotate(self, adata: ad.AnnData | None = None, *, n_samples: int = 10, seed: int = 0,
                 embed: bool = True, n_neighbors: int = 30, min_dist: float = 0.1, sigma: float = 0.05,
                 layers: LayerSink | None = None) -> ad.AnnData:
        """Write VICDYF's outputs into ``adata`` (default: the training AnnData) and return it.

        With ``layers`` (called as ``layers(key, first_cell, block)``), the four cells x genes
        layers go to it batch by batch instead of into ``adata.layers``: the workflow writes them
        straight into its output file (:func:`cellfate.dynamics.outfile.write_annotated`).
        """
        from cellfate.dynamics.embedding import add_scverse_keys, knn_indices, project_velocity, umap_embedding

        adata = self.adata if adata is None else adata
        self._check_genes(adata)
        post = self._gather(self.posterior_batches(n_samples=n_samples, seed=seed), layers)
        for key in OUTPUT_KEYS["layers"]:
            if layers is None:
                adata.layers[key] = post[key]
        for key in OUTPUT_KEYS["obs"]:
            adata.obs[key] = post[f"obs:{key}"]
        for key in ("X_vicdyf_z", "X_vicdyf_zl", "X_vicdyf_d", "X_vicdyf_dl"):
            adata.obsm[key] = post[key]
        adata.obsm["X_vicdyf_diffusion"] = post["diffusion"]
        module = self.module
        adata.var["vicdyf_used"] = True
        adata.var["vicdyf_beta"] = module.beta.detach().cpu().numpy()
        adata.var["vicdyf_gamma"] = module.gamma.detach().cpu().numpy()
        adata.var["vicdyf_gene_scale"] = self.data.gene_factor.cpu().numpy()
        if embed:
            zl = post["X_vicdyf_zl"]
            umap = umap_embedding(zl, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
            adata.obsm["X_vicdyf_umap"] = umap
            neighbors = knn_indices(zl, n_neighbors)  # one graph for both kinds of arrow
            for key, d in (("X_vicdyf_sdumap", post["X_vicdyf_d"]), ("X_vicdyf_mdumap", post["X_vicdyf_dl"])):
                adata.obsm[key] = project_velocity(zl, d, umap, n_neighbors, sigma, neighbors=neighbors)
            add_scverse_keys(adata.obsm, adata.uns, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
        adata.uns["vicdyf"] = {
            "config": self.config.to_dict(),
            "training": self.plan.to_dict() if self.plan else {},
            "n_samples": n_samples,
            "keys": json.dumps(OUTPUT_KEYS),
        }
        return adata

    # -- persistence ----------------------------------------------------------------------

    def _check_genes(self, adata: ad.AnnData, source: str | None = None) -> None:
        genes = list(adata.var_names)
        if genes != self.registry["genes"]:
            expected = self.registry["genes"]
            missing = [g for g in expected if g not in set(genes)]
            extra = [g for g in genes if g not in set(expected)]
            what = (f"{len(missing)} model gene(s) missing (e.g. {missing[:3]})" if missing else "") + \
                   (f"; {len(extra)} unknown gene(s) (e.g. {extra[:3]})" if extra else "")
            raise CellfateError(f"the genes differ from the model's ({what or 'same genes, different order'})", source)

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the model to folder ``path``: config.json, model.pt, history.tsv (atomically)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise CellfateError("the model folder exists; pass overwrite=True to replace it", path)
        with atomic_path(path, is_dir=True) as tmp:
            meta = {"config": self.config.to_dict(), "registry": self.registry,
                    "training": self.plan.to_dict() if self.plan else {}, "format": 1}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
            state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
            torch.save(state, tmp / WEIGHTS_FILE)
            self.history.to_csv(tmp / HISTORY_FILE, sep="\t", index=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], adata: ad.AnnData, device: str = "auto") -> VICDYF:
        """A saved model on ``adata``, which must hold the same genes in the same order."""
        path = Path(path)
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
        except (OSError, ValueError) as err:
            raise CellfateError(f"not a saved VICDYF model ({err})", path) from None
        config = meta["config"]
        registry = meta["registry"]
        model = cls.__new__(cls)
        model.registry = registry
        model._check_genes(adata, str(path))
        model.__init__(adata, spliced_layer=registry["spliced_layer"], unspliced_layer=registry["unspliced_layer"],
                       **{k: v for k, v in config.items() if k not in ("n_genes", "n_condition")}, source=str(path))
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.module.load_state_dict(state)
        model.module.to(resolve_device(device)).eval()
        model.plan = TrainingPlan(**meta["training"]) if meta.get("training") else None
        history = path / HISTORY_FILE
        if history.exists() and history.stat().st_size > 1:
            model.history = pd.read_csv(history, sep="\t")
        return model
