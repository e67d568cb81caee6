"""One table of what tokenization did to each sample, from the shard jobs' own counts.

Each shard job records its counts in a small JSON beside its shards, so this table never has to
re-read the shards (at corpus scale that would be terabytes).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import pandas as pd

from cellfate.errors import CellfateError
from cellfate.io import write_table

log = logging.getLogger(__name__)

COLUMNS = [
    "source", "sample", "cells_in", "cells_qc_passed", "cells_tokenized", "cells_dropped_no_known_gene",
    "cells_truncated", "mean_length", "genes_in_file", "genes_in_vocabulary",
]


def summarize(stats: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> pd.DataFrame:
    """Rule tokenize_summary: per sample cells in, QC-passed, tokenized, dropped, mean length."""
    rows = []
    for path in stats:
        try:
            rows.append(json.loads(open(path).read()))
        except (OSError, json.JSONDecodeError) as err:
            raise CellfateError(f"cannot read shard counts ({err})", path) from None
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_table(table, out)
    if len(table):
        log.info(
            "%d samples: %d cells in, %d QC-passed, %d tokenized, %d dropped with no known gene; mean length %.1f",
            len(table), table["cells_in"].sum(), table["cells_qc_passed"].sum(), table["cells_tokenized"].sum(),
            table["cells_dropped_no_known_gene"].sum(),
            (table["mean_length"] * table["cells_tokenized"]).sum() / max(table["cells_tokenized"].sum(), 1),
        )
    return table
