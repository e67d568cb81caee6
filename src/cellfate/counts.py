"""Count matrices: the one check that values are raw counts, and the one dense conversion.

Every model and reader of the workflow needs raw counts (finite, non-negative whole numbers) and
says so in one line naming the file when it gets normalised, log-transformed or corrupt values.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import scipy.sparse as sp

from cellfate.errors import CellfateError


def dense(x: object, dtype: type | None = np.float32) -> np.ndarray:
    """A sparse or dense matrix as a dense array (``dtype=None`` keeps the matrix's own)."""
    out = x.toarray() if sp.issparse(x) else np.asarray(x)
    return out if dtype is None else out.astype(dtype, copy=False)


def check_count_values(values: np.ndarray, what: str, source: str | PathLike[str] | None = None) -> None:
    """Raise a :class:`CellfateError` naming ``what`` (and the file) unless every value is a raw count.

    ``values`` are the stored values (a sparse matrix's ``.data``): the checks never densify.
    """
    values = np.asarray(values)
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise CellfateError(f"{what} has dtype {values.dtype}, not counts", source)
    if not values.size:
        return
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise CellfateError(f"{what} has NaN or infinite values", source)
        off = values != np.round(values)
        if off.any():
            raise CellfateError(
                f"{what} has non-integer values ({off.mean():.1%} of entries, e.g. {float(values[off][0]):.4g}): raw "
                "counts (whole numbers) are needed, not normalised or log-transformed values", source)
    if values.min() < 0:
        raise CellfateError(f"{what} has negative values (minimum {values.min():g}); raw counts are needed", source)
