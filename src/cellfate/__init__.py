"""cellfate: public mouse single-cell data to a foundation model, cell-state dynamics and tissue maps.

Sub-packages mirror the workflow stages (see the README): ``simulate`` (demo data with known truth),
``sources`` (downloads and readers), ``corpus`` (QC, medians, tokenization), ``foundation``
(pretraining and model use), ``velocity`` (spliced/unspliced counting), ``dynamics`` (VICDYF),
``spatial`` (DeepCOLOR) and ``plotting``.
"""

__version__ = "0.1.0"
