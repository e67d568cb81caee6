"""DeepCOLOR: where single cells sit in a tissue and whom they sit next to.

Laid out as scvi-tools lays out a model: :mod:`~cellfate.spatial.module` (torch networks and
losses, no AnnData), :mod:`~cellfate.spatial.train` (the two-phase loop),
:mod:`~cellfate.spatial.model` (:class:`~cellfate.spatial.model.DeepColor`: AnnData in and out,
save/load); then :mod:`~cellfate.spatial.colocalization` (cell-pair and type-level scores without
an N x N matrix), :mod:`~cellfate.spatial.pair_clusters`, :mod:`~cellfate.spatial.ligands`,
:mod:`~cellfate.spatial.environment` (environment-dependent dynamics),
:mod:`~cellfate.spatial.validation` (against the simulated truth) and
:mod:`~cellfate.spatial.pipeline` (one function per workflow rule).
"""
