"""Old and alias gene symbols, resolved through the nomenclature committees' own tables.

Datasets keep the symbols of the annotation they were made with: mouse pancreas counts still say
``Wbp5``, ``Atp5b``, ``Gnb2l1`` (now ``Tceal9``, ``Atp5f1b``, ``Rack1``); human PBMC data says
``IGJ`` and ``ATP5B`` (now ``JCHAIN``, ``ATP5F1B``). Without the synonym tables their counts are
dropped as unresolved. The tables are the committees' downloads, fetched like any source:

- human: HGNC's complete set (``hgnc_complete_set.txt``: ``symbol``, ``prev_symbol``,
  ``alias_symbol``, ``|``-separated) or an HGNC custom download (``Approved symbol``, ``Previous
  symbols``, ``Alias symbols``, ``,``-separated);
- mouse: MGI's ``MRK_List2.rpt`` (``Marker Symbol``, ``Marker Synonyms (pipe-separated)``) or a
  table with ``symbol`` and ``synonyms`` columns (``|``-separated).

A current symbol is never remapped. A previous symbol outranks an alias (HGNC's own order); a name
that still points to several current genes is reported as ambiguous and left unresolved: guessing
would give one gene's counts to another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field

import pandas as pd

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)

#: Column layouts: (current symbol, previous symbols, aliases, separator, status column or None).
LAYOUTS = (
    ("symbol", "prev_symbol", "alias_symbol", "|", None),  # HGNC complete set
    ("Approved symbol", "Previous symbols", "Alias symbols", ",", "Status"),  # HGNC custom download
    ("Marker Symbol", None, "Marker Synonyms (pipe-separated)", "|", "Status"),  # MGI MRK_List2.rpt
    ("symbol", None, "synonyms", "|", None),  # MGI symbol/synonym table
)
#: Status values of rows that name a current gene (HGNC 'Approved', MGI 'O' for official).
CURRENT_STATUS = {"Approved", "O"}


@dataclass(frozen=True)
class SynonymTable:
    """Current symbols and the unambiguous old/alias -> current map of one species."""

    current: frozenset[str]
    lookup: dict[str, str]
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""


def _split(value: object, sep: str) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        return []
    return [part.strip().strip('"') for part in re.split(re.escape(sep), value) if part.strip().strip('"')]


def _layout(columns: pd.Index, path: str | os.PathLike[str]) -> tuple:
    for layout in LAYOUTS:
        if layout[0] in columns and layout[2] in columns and (layout[1] is None or layout[1] in columns):
            return layout
    raise CellfateError(
        f"not a gene synonym table: no symbol/synonym columns (HGNC complete set or custom download, MGI "
        f"MRK_List2.rpt); columns: {list(columns)[:6]}", path
    )


def _candidates(frame: pd.DataFrame, column: str | None, sep: str, current: frozenset[str]) -> dict[str, set[str]]:
    """Old name -> the current symbols that list it in ``column`` (current symbols themselves skipped)."""
    out: dict[str, set[str]] = {}
    if column is None:
        return out
    for symbol, names in zip(frame["_symbol"], frame[column]):
        for name in _split(names, sep):
            if name not in current and name != symbol:
                out.setdefault(name, set()).add(symbol)
    return out


def read_synonyms(path: str | os.PathLike[str]) -> SynonymTable:
    """The synonym table at ``path`` (layout told by its header); one line if it is not one."""
    if not os.path.isfile(path):
        raise CellfateError("the gene synonym table does not exist", path)
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, comment=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CellfateError(f"not a readable gene synonym table ({err})", path) from None
    symbol, previous, alias, sep, status = _layout(frame.columns, path)
    if status and status in frame:
        frame = frame[frame[status].isin(CURRENT_STATUS)]
    frame = frame.assign(_symbol=frame[symbol].str.strip().str.strip('"'))
    frame = frame[frame["_symbol"] != ""]
    current = frozenset(frame["_symbol"])
    lookup: dict[str, str] = {}
    ambiguous: dict[str, tuple[str, ...]] = {}
    # previous symbols first, then aliases for names no previous symbol settled
    for column in (previous, alias):
        for name, targets in _candidates(frame, column, sep, current).items():
            if name in lookup or name in ambiguous and column == alias:
                continue
            if len(targets) == 1:
                lookup[name] = next(iter(targets))
                ambiguous.pop(name, None)
            else:
                ambiguous[name] = tuple(sorted(targets))
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]
    log.info("%s: %d current symbols, %d old/alias symbols resolved, %d ambiguous (sha256 %s)", path, len(current),
             len(lookup), len(ambiguous), digest)
    return SynonymTable(current, lookup, ambiguous, f"{os.path.basename(str(path))} (sha256 {digest})")


def resolve_symbols(names: list[str | None], table: SynonymTable | None,
                    known: set[str] | frozenset[str]) -> tuple[list[str | None], dict[str, str]]:
    """Current symbols for ``names`` that ``known`` (the gene table's symbols) lacks.

    Returns ``(names, notes)``: each name replaced by its current symbol where the synonym table
    gives exactly one that ``known`` has, else kept; ``notes`` says why each unresolved old name
    stayed (``ambiguous: A|B``), for the unresolved-gene report.
    """
    if table is None:
        return list(names), {}
    out: list[str | None] = []
    notes: dict[str, str] = {}
    for name in names:
        if not name or name in known:
            out.append(name)
        elif name in table.lookup and table.lookup[name] in known:
            out.append(table.lookup[name])
        else:
            if name in table.ambiguous:
                notes[name] = "ambiguous: " + "|".join(table.ambiguous[name])
            out.append(name)
    renamed = sum(1 for a, b in zip(names, out) if a != b)
    if renamed or notes:
        log.info("%d old or alias symbols renamed through %s; %d ambiguous left unresolved", renamed, table.source,
                 len(notes))
    return out, notes


def load_synonyms(path: str | os.PathLike[str] | list | None) -> SynonymTable | None:
    """The table at ``path``, or None when none is configured (a rule's empty input is ``[]``)."""
    if isinstance(path, (list, tuple)):
        path = path[0] if path else None
    return read_synonyms(path) if path else None
