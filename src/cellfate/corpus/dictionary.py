"""Token dictionaries and gene-median tables: built from the corpus, saved as plain JSON/TSV.

A dictionary maps ``<pad>`` to 0, ``<mask>`` to 1, ``<cls>``/``<eos>`` to 2/3 in v2 style, then one
token per gene, assigned in ascending Ensembl id order so that the tokenizer's tie-break (token
id) is also alphabetical by gene and two builds of the same gene set are identical.

We save JSON and TSV, never pickles: a pickle runs code when loaded. Geneformer ships its
dictionaries as pickles, so :func:`load_token_dictionary` and :func:`load_gene_medians` also read
those, through an unpickler that only rebuilds plain containers and numpy scalars and refuses any
other class.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cellfate.errors import CellfateError
from cellfate.io import write_text

log = logging.getLogger(__name__)

PAD, MASK, CLS, EOS = "<pad>", "<mask>", "<cls>", "<eos>"
VERSIONS = ("v1", "v2")
DEFAULT_MAX_LENGTH = {"v1": 2048, "v2": 4096}
GENE_POLICIES = ("all_detected", "protein_coding")


def special_tokens(version: str) -> list[str]:
    """The special tokens of a dictionary style, in id order."""
    check_version_name(version)
    return [PAD, MASK] if version == "v1" else [PAD, MASK, CLS, EOS]


def check_version_name(version: str) -> None:
    if version not in VERSIONS:
        raise CellfateError(f"tokenize version must be one of {', '.join(VERSIONS)}, got {version!r}")


# -- safe pickle loading ---------------------------------------------------------------------
_ALLOWED_GLOBALS = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "tuple"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("builtins", "bool"), ("collections", "OrderedDict"), ("_codecs", "encode"),
    ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _AllowListUnpickler(pickle.Unpickler):
    """Rebuild only dicts, lists, strings, numbers and numpy scalars; refuse everything else."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickle_safely(path: str | os.PathLike[str]) -> object:
    """Load a pickle of plain data (Geneformer's dictionaries) without running arbitrary code."""
    try:
        with open(path, "rb") as handle:
            return _AllowListUnpickler(io.BytesIO(handle.read())).load()
    except FileNotFoundError:
        raise CellfateError("no such file", path) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise CellfateError(f"not a plain-data pickle ({err})", path) from None


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


# -- token dictionary ------------------------------------------------------------------------
def build_token_dictionary(gene_ids: Iterable[str], version: str) -> dict[str, int]:
    """Special tokens first, then the genes in ascending id order."""
    genes = sorted(set(gene_ids))
    specials = special_tokens(version)
    clash = [g for g in genes if g in specials]
    if clash:
        raise CellfateError(f"gene ids clash with special tokens: {clash}")
    return {token: i for i, token in enumerate(specials + genes)}


def save_token_dictionary(dictionary: Mapping[str, int], path: str | os.PathLike[str]) -> None:
    """Write the dictionary as JSON (ids ascending), atomically."""
    ordered = dict(sorted(dictionary.items(), key=lambda item: item[1]))
    write_text(path, json.dumps(ordered, indent=0) + "\n")


def load_token_dictionary(path: str | os.PathLike[str]) -> dict[str, int]:
    """Read a token dictionary from JSON (ours) or a Geneformer pickle, and check it."""
    path = Path(path)
    if path.suffix in (".pkl", ".pickle"):
        raw = load_pickle_safely(path)
    else:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CellfateError("no such file", path) from None
        except json.JSONDecodeError as err:
            raise CellfateError(f"not a JSON token dictionary ({err})", path) from None
    if not isinstance(raw, Mapping):
        raise CellfateError(f"a token dictionary must map tokens to ids, found {type(raw).__name__}", path)
    dictionary = {}
    for key, value in raw.items():
        value = _plain(value)
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CellfateError(f"entry {key!r}: {value!r} is not a token -> non-negative integer id", path)
        dictionary[key] = value
    if dictionary.get(PAD) != 0 or dictionary.get(MASK) != 1:
        raise CellfateError(f"expected {PAD}=0 and {MASK}=1, found {PAD}={dictionary.get(PAD)} {MASK}={dictionary.get(MASK)}", path)
    if len(set(dictionary.values())) != len(dictionary):
        raise CellfateError("two tokens share an id", path)
    return dictionary


def dictionary_version(dictionary: Mapping[str, int]) -> str:
    """v2 when the dictionary has ``<cls>`` and ``<eos>``, v1 when it has neither."""
    has = [t in dictionary for t in (CLS, EOS)]
    if all(has):
        return "v2"
    if not any(has):
        return "v1"
    return "mixed"


def check_dictionary_version(dictionary: Mapping[str, int], version: str, path: str | os.PathLike[str] | None = None) -> None:
    """A v2 configuration needs ``<cls>``/``<eos>``; a v1 one must not have them (a v2 vocabulary)."""
    check_version_name(version)
    found = dictionary_version(dictionary)
    if found != version:
        what = {"v1": "has no <cls>/<eos> (a v1 dictionary)", "v2": "has <cls> and <eos> (a v2 dictionary)",
                "mixed": "has only one of <cls>/<eos>"}[found]
        raise CellfateError(f"the token dictionary {what} but tokenize.version is {version}; use a matching dictionary or version", path)


# -- gene medians ----------------------------------------------------------------------------
def save_gene_medians(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write gene_id, median, n_cells as TSV (full float precision), atomically."""
    from cellfate.io import atomic_path

    with atomic_path(path) as tmp:
        table[["gene_id", "median", "n_cells"]].to_csv(tmp, sep="\t", index=False, float_format="%.17g")


def _read_map_file(path: Path, what: str, read_table) -> object:
    """A Geneformer pickle, a JSON object, or (any other suffix) a TSV turned into a dict by ``read_table``."""
    if path.suffix in (".pkl", ".pickle"):
        return load_pickle_safely(path)
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as err:
            raise CellfateError(f"cannot read {what} ({err})", path) from None
    try:
        return read_table(path)
    except FileNotFoundError:
        raise CellfateError("no such file", path) from None


def _median_table(path: Path) -> dict:
    # round_trip: the medians were written with 17 digits; the default parser can miss the last bit
    table = pd.read_csv(path, sep="\t", dtype={"gene_id": str}, float_precision="round_trip")
    missing = {"gene_id", "median"} - set(table.columns)
    if missing:
        raise CellfateError(f"gene-median table lacks column(s) {sorted(missing)}", path)
    return dict(zip(table["gene_id"], table["median"]))


def load_gene_medians(path: str | os.PathLike[str]) -> dict[str, float]:
    """Gene -> median from our TSV or JSON, or a Geneformer pickle; medians must be positive."""
    path = Path(path)
    raw = _read_map_file(path, "gene medians", _median_table)
    if not isinstance(raw, Mapping):
        raise CellfateError(f"gene medians must map gene ids to numbers, found {type(raw).__name__}", path)
    medians = {}
    for gene, value in raw.items():
        value = _plain(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise CellfateError(f"gene {gene!r} has median {value!r}; medians must be positive numbers", path)
        medians[str(gene)] = float(value)
    return medians


# -- the workflow step -------------------------------------------------------------------------
def build(
    gene_medians: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    version: str = "v1",
    gene_policy: str = "all_detected",
    biotype_table: str | None = None,
    min_cells: int = 1,
    given: str | os.PathLike[str] | None = None,
) -> dict[str, int]:
    """Token dictionary of the genes with a median (detected in >= ``min_cells`` cells) under a policy.

    ``all_detected`` keeps every such gene (as Mouse-Geneformer did, ~all mouse genes);
    ``protein_coding`` keeps those whose biotype is ``protein_coding`` in ``biotype_table``
    (see :mod:`cellfate.corpus.biotypes`). With ``given`` (a pretrained model's dictionary, JSON
    or Geneformer pickle) that dictionary is checked against ``version`` and saved as our JSON
    instead, so every later step reads one format from one place.
    """
    check_version_name(version)
    if given:
        dictionary = load_token_dictionary(given)
        check_dictionary_version(dictionary, version, given)
        save_token_dictionary(dictionary, out)
        log.info("wrote the given dictionary %s (%d tokens, %s) to %s", given, len(dictionary), version, out)
        return dictionary
    if gene_policy not in GENE_POLICIES:
        raise CellfateError(f"tokenize.gene_policy must be one of {', '.join(GENE_POLICIES)}, got {gene_policy!r}")
    table = pd.read_csv(gene_medians, sep="\t", dtype={"gene_id": str})
    genes = table.loc[table["n_cells"] >= min_cells, "gene_id"]
    log.info("%d genes have a median over >= %d cells (of %d in %s)", len(genes), min_cells, len(table), gene_medians)
    if gene_policy == "protein_coding":
        from cellfate.corpus.biotypes import load_biotypes

        biotypes = load_biotypes(biotype_table)
        coding = set(biotypes.index[biotypes == "protein_coding"])
        unknown = int((~genes.isin(biotypes.index)).sum())
        genes = genes[genes.isin(coding)]
        log.info("protein_coding policy: %d genes kept; %d detected genes have no biotype in the table", len(genes), unknown)
    if genes.empty:
        raise CellfateError(f"no gene passes the {gene_policy} policy; the dictionary would be empty", gene_medians)
    dictionary = build_token_dictionary(genes, version)
    save_token_dictionary(dictionary, out)
    log.info("wrote %d tokens (%s) to %s", len(dictionary), version, out)
    return dictionary


# -- symbol -> Ensembl mapping -----------------------------------------------------------------
def _mapping_table(path: Path) -> dict:
    table = pd.read_csv(path, sep="\t", dtype=str)
    if table.shape[1] < 2:
        raise CellfateError("a gene mapping table needs two columns: symbol, gene_id", path)
    return dict(zip(table.iloc[:, 0], table.iloc[:, 1]))


def load_gene_mapping(path: str | os.PathLike[str]) -> dict[str, str]:
    """Gene symbol -> Ensembl id from a Geneformer pickle (e.g. ``..._GeneSymbol_to_EnsemblID.pkl``),
    JSON, or a two-column TSV (symbol, gene_id); every value must be a string id."""
    path = Path(path)
    raw = _read_map_file(path, "the gene mapping", _mapping_table)
    if not isinstance(raw, Mapping) or not raw:
        raise CellfateError("a gene mapping must be a non-empty map of symbol -> Ensembl id", path)
    bad = next(((k, v) for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, str)), None)
    if bad is not None:
        raise CellfateError(f"entry {bad[0]!r}: {bad[1]!r} is not symbol -> Ensembl id (both strings)", path)
    return dict(raw)
