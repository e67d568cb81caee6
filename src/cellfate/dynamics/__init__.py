"""VICDYF: stochastic cell-state dynamics and their fluctuation from spliced/unspliced counts.

Laid out as scvi-tools lays out a model: :mod:`~cellfate.dynamics.module` (torch networks and the
loss, no AnnData), :mod:`~cellfate.dynamics.train` (the two-phase loop),
:mod:`~cellfate.dynamics.model` (:class:`~cellfate.dynamics.model.VICDYF`: AnnData in and out,
save/load), then :mod:`~cellfate.dynamics.embedding` (velocity on a 2-D embedding through a kNN
graph), :mod:`~cellfate.dynamics.fluctuation` (the paper's fluctuation analysis) and
:mod:`~cellfate.dynamics.validation` (against the simulated truth).
"""
