"""Seeded simulators with known ground truth, for the demo and the tests.

- :mod:`~cellfate.simulate.corpus`: a mini-corpus of mouse cells of known types, written in the
  three public sources' real formats (:mod:`~cellfate.simulate.source_formats`).
- :mod:`~cellfate.simulate.bifurcation`: a differentiation with a fate bifurcation and splicing
  kinetics (true pseudotime, branch, velocity); :mod:`~cellfate.simulate.bam` writes its counts as
  a 10x-style BAM + GTF that velocyto counts back exactly.
- :mod:`~cellfate.simulate.tissue`: spots on a grid with cell types in spatial domains and an
  independent single-cell reference.
- :mod:`~cellfate.simulate.environment`: a tissue where a partner type drives a lineage's fate
  and pace through its density; :mod:`~cellfate.simulate.tissue_points`: the same truth from a
  different design (cells as clustered points, disc spots, fate and pace set by the count of
  driver cells nearby), held out from the choice of the environment chain's settings.
"""
