"""Checks of velocyto's inputs, run before it so that each known trap is one clear error.

velocyto 0.17.17 is unmaintained and fails late or silently on inputs it does not expect:

- reads without an ``NH`` tag: a ``KeyError`` deep in the read parser;
- fewer than about 1,000 reads with ``CB``/``UB``: the barcode tag is never detected and it ends
  with "Main matrix cannot be empty";
- chromosome names that differ between BAM and GTF (``chr1`` vs ``1``): every read is silently
  unassigned; a name with ``_`` is cut at the underscore and silently matches nothing;
- a leftover ``cellsorted_<bam>`` beside the BAM (from an earlier, possibly killed run): reused
  without a word, whatever it contains;
- barcodes in ``barcodes.tsv`` that match no ``CB`` (a missing ``-1`` suffix): an empty matrix.

The checks read only the BAM header, its index statistics and the first reads, so they take
seconds even on a full-size BAM.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pysam

from cellfate.errors import CellfateError

log = logging.getLogger(__name__)

#: velocyto does not detect the cell barcode tag with fewer reads carrying it than this.
MIN_TAGGED_READS = 1_000
#: Reads looked at for the NH tag and for the barcodes' overlap with the CB values.
SAMPLED_READS = 20_000
#: Reads scanned at most while looking for MIN_TAGGED_READS reads with CB and UB.
MAX_SCANNED_READS = 500_000
#: velocyto sorts by cell with ``samtools sort -t CB``, which appeared in samtools 1.6.
MIN_SAMTOOLS = (1, 6)
#: Above this fraction of mapped reads on chromosomes the GTF lacks, the names surely differ.
MAX_UNANNOTATED_FRACTION = 0.5
#: Above this fraction of mapped reads on chromosomes whose name has '_', too much is lost.
MAX_UNDERSCORE_FRACTION = 0.01


def stale_cellsorted_path(bam: str | os.PathLike[str]) -> Path:
    """Where velocyto looks for (and would reuse) its cell-sorted copy of ``bam``."""
    bam = Path(bam)
    return bam.with_name("cellsorted_" + bam.name)


def check_no_stale_cellsorted(bam: str | os.PathLike[str]) -> None:
    """Refuse a leftover ``cellsorted_<bam>``: velocyto would reuse it without checking it."""
    stale = stale_cellsorted_path(bam)
    if stale.exists():
        raise CellfateError(
            f"a leftover {stale.name} lies beside the BAM (from an earlier velocyto run, possibly killed); "
            "velocyto would silently reuse it instead of sorting this BAM: delete it and run again",
            stale,
        )


def check_samtools() -> None:
    """velocyto shells out to ``samtools sort -t CB``: it must be on PATH and at least 1.6."""
    exe = shutil.which("samtools")
    if exe is None:
        raise CellfateError("samtools is not on PATH; velocyto sorts the BAM by cell with it (apt-get install samtools)")
    out = subprocess.run([exe, "--version"], capture_output=True, check=False).stdout.decode("utf-8", "replace")
    match = re.search(r"samtools (\d+)\.(\d+)", out)
    if match and (int(match.group(1)), int(match.group(2))) < MIN_SAMTOOLS:
        raise CellfateError(f"samtools {match.group(1)}.{match.group(2)} is too old; velocyto needs >= 1.6 (sort -t CB)", exe)


def gtf_chromosomes(gtf: str | os.PathLike[str]) -> set[str]:
    """Sequence names of a (possibly gzipped) GTF's feature lines."""
    opener = gzip.open if str(gtf).endswith(".gz") else open
    names: set[str] = set()
    with opener(gtf, "rt") as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split("\t", 3)
            if len(fields) < 4:
                raise CellfateError(f"not a GTF: a line has {len(fields)} tab-separated fields, expected 9", gtf)
            names.add(fields[0])
    if not names:
        raise CellfateError("the GTF has no feature lines", gtf)
    return names


def read_barcodes(path: str | os.PathLike[str]) -> list[str]:
    """The barcodes of a ``barcodes.tsv`` (or ``.tsv.gz``), first column, in order."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        barcodes = [line.split("\t")[0].strip() for line in handle if line.strip()]
    if not barcodes:
        raise CellfateError("the barcodes file is empty", path)
    return barcodes


def _mapped_per_chromosome(bam: pysam.AlignmentFile) -> dict[str, int] | None:
    """Mapped reads per chromosome from the index, or None without an index."""
    try:
        return {s.contig: s.mapped for s in bam.get_index_statistics()}
    except ValueError:
        return None


def check_chromosomes(bam_path: str | os.PathLike[str], bam: pysam.AlignmentFile, gtf: str | os.PathLike[str]) -> None:
    """The BAM's chromosomes must be named as the GTF's, and not lose reads to velocyto's '_' cut."""
    bam_names = set(bam.references)
    gtf_names = gtf_chromosomes(gtf)
    shared = bam_names & gtf_names
    example = f"BAM has {sorted(bam_names)[:3]}, GTF has {sorted(gtf_names)[:3]}"
    if not shared:
        raise CellfateError(f"no chromosome name is shared by the BAM and the GTF ({example}); rename one (e.g. 'chr1' vs '1')", bam_path)
    mapped = _mapped_per_chromosome(bam)
    if mapped is None:
        log.warning("%s has no index: chromosome names checked by name only", bam_path)
        return
    total = sum(mapped.values())
    if total == 0:
        raise CellfateError("the BAM has no mapped reads", bam_path)
    unannotated = sum(n for c, n in mapped.items() if c not in gtf_names) / total
    if unannotated > MAX_UNANNOTATED_FRACTION:
        raise CellfateError(
            f"{unannotated:.0%} of mapped reads lie on chromosomes the GTF does not name ({example}); "
            "the chromosome names of BAM and GTF differ",
            bam_path,
        )
    underscore = {c: n for c, n in mapped.items() if "_" in c and c in gtf_names and n > 0}
    lost = sum(underscore.values()) / total
    if lost > MAX_UNDERSCORE_FRACTION:
        raise CellfateError(
            f"{lost:.1%} of mapped reads lie on chromosomes with '_' in their name ({sorted(underscore)[:3]}); "
            "velocyto cuts names at '_' and silently drops those reads: rename the chromosomes in BAM and GTF",
            bam_path,
        )
    if underscore:
        log.warning("velocyto will drop %d reads on chromosomes named with '_': %s", sum(underscore.values()), sorted(underscore)[:5])


def _primary_mapped(bam: pysam.AlignmentFile) -> Iterable[pysam.AlignedSegment]:
    for read in bam.fetch(until_eof=True):
        if not (read.is_unmapped or read.is_secondary or read.is_supplementary):
            yield read


def check_tags(bam_path: str | os.PathLike[str], bam: pysam.AlignmentFile, barcodes: list[str] | None) -> None:
    """Reads must carry NH; enough must carry CB and UB; the CB values must meet the barcodes file."""
    n_seen = n_tagged = 0
    cell_barcodes: set[str] = set()
    for read in _primary_mapped(bam):
        n_seen += 1
        if n_seen <= SAMPLED_READS and not read.has_tag("NH"):
            raise CellfateError(
                f"read {read.query_name} has no NH tag; velocyto reads NH from every read and fails with a KeyError "
                "(add NH:i:1 to uniquely mapped reads, as STAR and Cell Ranger do)",
                bam_path,
            )
        if read.has_tag("CB") and read.has_tag("UB"):
            n_tagged += 1
            if len(cell_barcodes) < SAMPLED_READS:
                cell_barcodes.add(str(read.get_tag("CB")))
        if (n_tagged >= MIN_TAGGED_READS and n_seen >= SAMPLED_READS) or n_seen >= MAX_SCANNED_READS:
            break
    if n_seen == 0:
        raise CellfateError("the BAM has no mapped primary reads", bam_path)
    if n_tagged < MIN_TAGGED_READS:
        raise CellfateError(
            f"only {n_tagged} of the first {n_seen} reads carry both CB and UB tags; velocyto needs at least "
            f"{MIN_TAGGED_READS} (fewer and it fails with 'Main matrix cannot be empty'): is this a 10x BAM?",
            bam_path,
        )
    if barcodes is not None and not cell_barcodes & set(barcodes):
        raise CellfateError(
            f"none of the BAM's CB values (e.g. {sorted(cell_barcodes)[:2]}) is in the barcodes file "
            f"(e.g. {barcodes[:2]}); a '-1' suffix missing on one side?",
            bam_path,
        )


def check_inputs(
    bam: str | os.PathLike[str],
    gtf: str | os.PathLike[str],
    barcodes: str | os.PathLike[str] | None = None,
    mask: str | os.PathLike[str] | None = None,
) -> None:
    """Every check velocyto's inputs need; raises :class:`CellfateError` naming the file at fault."""
    for label, path in (("BAM", bam), ("GTF", gtf), ("barcodes file", barcodes), ("repeat mask", mask)):
        if path is not None and not Path(path).is_file():
            raise CellfateError(f"the {label} does not exist", path)
    check_samtools()
    check_no_stale_cellsorted(bam)
    barcode_list = read_barcodes(barcodes) if barcodes is not None else None
    if mask is not None:
        gtf_chromosomes(mask)  # a readable GTF
    try:
        handle = pysam.AlignmentFile(str(bam), "rb")
    except (ValueError, OSError) as err:
        raise CellfateError(f"not a readable BAM ({err})", bam) from None
    with handle:
        check_chromosomes(bam, handle, gtf)
        check_tags(bam, handle, barcode_list)
