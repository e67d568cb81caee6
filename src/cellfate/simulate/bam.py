"""Write known spliced/unspliced counts as a 10x-style BAM + GTF that ``velocyto run`` counts back exactly.

The synthetic genome
--------------------
Genes are laid out in contiguous blocks on a few Ensembl-style chromosomes (``"1"``, ``"2"``...,
no ``chr`` prefix and no underscore: velocyto rewrites names with ``_`` and then matches nothing),
alternating ``+`` / ``-`` strand, :data:`GENE_GAP` bases apart so that no two genes overlap. Each
gene is one transcript (``<gene_id>-T1``) of 2-4 exons of 150-400 bases separated by introns of
300-2,000 bases (drawn from ``seed``); the GTF has ``gene``, ``transcript`` and ``exon`` lines with
``gene_id`` / ``gene_name`` / ``transcript_id`` / ``exon_number`` (Ensembl numbering: exon 1 is the
5'-most, so the highest coordinate on ``-``).

velocyto 0.17.17 never tests the last feature of a chromosome strand (its index scans stop at
``i < maxiidx``), so every chromosome ends with one padding gene per strand (ids
``CELLFATEPAD<chrom>P`` / ``CELLFATEPAD<chrom>M``) that carries no reads. They appear in the loom
as all-zero rows.

The reads
---------
One read of :data:`READ_LENGTH` bases per molecule, sense to its gene (flag 16 on ``-`` genes, as
10x R2 reads are), MAPQ 255, tags ``CB`` (barcode + ``-1``), ``UB`` (a 12-mer UMI unique within its
cell: velocyto collapses reads by cell and UMI) and ``NH:i:1`` (velocyto reads ``NH`` from every
read). The sequence is the synthetic reference's (a seeded random genome), base quality ``F``.

- spliced molecule: ``aM<intron>NbM`` across a randomly chosen exon-exon junction, with ``a, b``
  between :data:`MIN_PART` and ``READ_LENGTH - MIN_PART``; both segments end exactly on the exon
  boundaries, so velocyto finds an exon-only model and counts it spliced;
- unspliced molecule: one ``90M`` segment across a randomly chosen exon-intron or intron-exon
  boundary, at least :data:`MIN_PART` bases on each side. Such reads validate their intron in
  velocyto's mark-up pass and are then counted unspliced ("spans exon-intron") by every 10x logic.

velocyto needs roughly 1,000 reads or it fails with "Main matrix cannot be empty", so fewer than
:data:`MIN_MOLECULES` molecules in total is refused upfront.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

from cellfate.counts import check_count_values, dense
from cellfate.errors import CellfateError
from cellfate.io import atomic_path

#: Bases per read (10x v3 read 2 is 91; velocyto does not care).
READ_LENGTH = 90
#: Minimum bases of a read on each side of a junction or exon-intron boundary (velocyto's
#: MIN_FLANK is 5 and its splice tolerance 6; 20 keeps well clear of both).
MIN_PART = 20
#: UMI length (10x v3).
UMI_LENGTH = 12
#: Bases between the end of one gene and the start of the next.
GENE_GAP = 5_000
#: Bases before the first gene and after the last padding gene of a chromosome.
CHROM_FLANK = 1_000
#: Genes per chromosome (at least three chromosomes when there are three genes or more).
GENES_PER_CHROM = 2_000
#: Fewer molecules than this make velocyto 0.17.17 fail ("Main matrix cannot be empty").
MIN_MOLECULES = 1_000

_BARCODE_RE = re.compile(r"^[ACGT]{16}$")
_BAD_ATTRIBUTE_RE = re.compile(r'[\s";]')
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_EXON_LENGTHS = (150, 400)
_INTRON_LENGTHS = (300, 2_000)
_EXON_COUNTS = (2, 4)


@dataclass(frozen=True)
class _Gene:
    gene_id: str
    gene_name: str
    chrom: str
    strand: str
    exons: tuple[tuple[int, int], ...]  # 1-based inclusive, ascending coordinates

    @property
    def start(self) -> int:
        return self.exons[0][0]

    @property
    def end(self) -> int:
        return self.exons[-1][1]

    @property
    def transcript_id(self) -> str:
        return f"{self.gene_id}-T1"

    @property
    def transcript_name(self) -> str:
        return f"{self.gene_name}-201"


def write_velocyto_inputs(
    spliced: np.ndarray,
    unspliced: np.ndarray,
    barcodes: list[str],
    gene_ids: list[str],
    gene_names: list[str],
    bam_path: str | os.PathLike[str],
    gtf_path: str | os.PathLike[str],
    barcodes_path: str | os.PathLike[str],
    seed: int = 0,
) -> None:
    """Write a coordinate-sorted, indexed BAM, its GTF and a ``barcodes.tsv`` encoding the counts.

    ``spliced`` and ``unspliced`` are cells x genes arrays of non-negative integers; ``barcodes`` are
    the cells' 16-base barcodes (the BAM's ``CB`` is ``barcode-1``, as Cell Ranger writes it, and
    ``barcodes_path`` lists those ``CB`` values); ``gene_ids`` / ``gene_names`` name the columns.
    ``velocyto run -b barcodes_path -e SAMPLE BAM GTF`` then reports exactly these counts (and no
    ambiguous ones), plus all-zero rows for the padding genes. The BAM index goes to
    ``<bam_path>.bai``; a stale ``cellsorted_<bam name>`` beside the BAM, which velocyto would
    silently reuse, is removed. All outputs are written atomically.
    """
    spl, uns = _check_inputs(spliced, unspliced, barcodes, gene_ids, gene_names)
    barcodes, gene_ids, gene_names = list(barcodes), list(gene_ids), list(gene_names)
    rng = np.random.default_rng(seed)
    genes, pads, chrom_lengths = _design_genome(gene_ids, gene_names, rng)
    clash = {p.gene_id for p in pads} & set(gene_ids)
    if clash:
        raise CellfateError(f"gene ids {sorted(clash)} clash with the simulator's padding genes; rename them")

    bam_path, gtf_path, barcodes_path = Path(bam_path), Path(gtf_path), Path(barcodes_path)
    with ExitStack() as stack:
        # Renamed in reverse order on success: barcodes, GTF, index, then the BAM itself last.
        tmp_bam = stack.enter_context(atomic_path(bam_path))
        tmp_bai = stack.enter_context(atomic_path(bam_path.with_name(bam_path.name + ".bai")))
        tmp_gtf = stack.enter_context(atomic_path(gtf_path))
        tmp_barcodes = stack.enter_context(atomic_path(barcodes_path))

        tmp_barcodes.write_text("".join(f"{b}-1\n" for b in barcodes))
        tmp_gtf.write_text(_gtf_text(genes + pads))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".bam_sim.", dir=bam_path.parent)))
        unsorted = workdir / "unsorted.bam"
        _write_reads(unsorted, spl, uns, barcodes, genes, chrom_lengths, rng, seed)
        pysam.sort("--no-PG", "-O", "BAM", "-T", str(workdir / "sort"), "-o", str(tmp_bam), str(unsorted))
        pysam.index("-o", str(tmp_bai), str(tmp_bam))
    stale = bam_path.with_name("cellsorted_" + bam_path.name)
    if stale.exists():
        stale.unlink()


def _check_inputs(
    spliced: np.ndarray, unspliced: np.ndarray, barcodes: list[str], gene_ids: list[str], gene_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The two count matrices as int64, after every check that would otherwise fail inside velocyto."""
    spl, uns = _check_counts(spliced, "spliced"), _check_counts(unspliced, "unspliced")
    if spl.shape != uns.shape:
        raise CellfateError(f"spliced has shape {spl.shape} but unspliced has shape {uns.shape}")
    n_cells, n_genes = spl.shape
    if n_cells == 0 or n_genes == 0:
        raise CellfateError(f"the count matrices are empty (shape {spl.shape})")
    _check_barcodes(list(barcodes), n_cells)
    _check_names(list(gene_ids), n_genes, "gene_ids", unique=True)
    _check_names(list(gene_names), n_genes, "gene_names", unique=False)
    total = int(spl.sum() + uns.sum())
    if total < MIN_MOLECULES:
        raise CellfateError(
            f"only {total} molecules in total; velocyto 0.17.17 fails with 'Main matrix cannot be empty' "
            f"below about {MIN_MOLECULES} reads, so at least {MIN_MOLECULES} are required"
        )
    per_cell = (spl.sum(axis=1) + uns.sum(axis=1)).max()
    if per_cell > 4**UMI_LENGTH:
        raise CellfateError(f"a cell has {per_cell} molecules, more than the {4**UMI_LENGTH} distinct {UMI_LENGTH}-base UMIs")
    return spl, uns


def _check_counts(counts, label: str) -> np.ndarray:
    array = dense(counts, dtype=None)
    if array.ndim != 2:
        raise CellfateError(f"{label} must be a cells x genes matrix, got {array.ndim} dimension(s)")
    check_count_values(array, label)
    return array.astype(np.int64)


def _check_barcodes(barcodes: list[str], n_cells: int) -> None:
    if len(barcodes) != n_cells:
        raise CellfateError(f"{len(barcodes)} barcodes for {n_cells} cells")
    bad = [b for b in barcodes if not isinstance(b, str) or not _BARCODE_RE.match(b)]
    if bad:
        raise CellfateError(f"barcodes must be 16 bases of A/C/G/T (no '-1' suffix); bad: {bad[:3]}")
    if len(set(barcodes)) != n_cells:
        raise CellfateError(f"barcodes are not unique ({n_cells - len(set(barcodes))} duplicates)")


def _check_names(names: list[str], n_genes: int, label: str, unique: bool) -> None:
    if len(names) != n_genes:
        raise CellfateError(f"{len(names)} {label} for {n_genes} genes")
    bad = [n for n in names if not isinstance(n, str) or not n or _BAD_ATTRIBUTE_RE.search(n)]
    if bad:
        raise CellfateError(f"{label} must be non-empty strings without whitespace, quotes or ';'; bad: {bad[:3]}")
    if unique and len(set(names)) != n_genes:
        raise CellfateError(f"{label} are not unique ({n_genes - len(set(names))} duplicates)")


def _random_gene_structure(start: int, rng: np.random.Generator) -> tuple[tuple[int, int], ...]:
    n_exons = int(rng.integers(_EXON_COUNTS[0], _EXON_COUNTS[1] + 1))
    exon_lengths = rng.integers(_EXON_LENGTHS[0], _EXON_LENGTHS[1] + 1, size=n_exons)
    intron_lengths = rng.integers(_INTRON_LENGTHS[0], _INTRON_LENGTHS[1] + 1, size=n_exons - 1)
    exons, pos = [], start
    for k in range(n_exons):
        exons.append((pos, pos + int(exon_lengths[k]) - 1))
        pos += int(exon_lengths[k]) + (int(intron_lengths[k]) if k < n_exons - 1 else 0)
    return tuple(exons)


def _design_genome(gene_ids: list[str], gene_names: list[str], rng: np.random.Generator):
    """Genes in input order, padding genes, and chromosome lengths (an ordered dict name -> length)."""
    n_genes = len(gene_ids)
    n_chroms = min(n_genes, max(3, math.ceil(n_genes / GENES_PER_CHROM)))
    per_chrom = math.ceil(n_genes / n_chroms)
    genes: list[_Gene] = []
    pads: list[_Gene] = []
    chrom_lengths: dict[str, int] = {}
    for c in range(n_chroms):
        chrom = str(c + 1)
        pos = CHROM_FLANK
        for k, g in enumerate(range(c * per_chrom, min(n_genes, (c + 1) * per_chrom))):
            exons = _random_gene_structure(pos, rng)
            genes.append(_Gene(gene_ids[g], gene_names[g], chrom, "+" if k % 2 == 0 else "-", exons))
            pos = exons[-1][1] + 1 + GENE_GAP
        for strand, tag in (("+", "P"), ("-", "M")):
            exons = _random_gene_structure(pos, rng)
            pads.append(_Gene(f"CELLFATEPAD{chrom}{tag}", f"CellfatePad{chrom}{tag}", chrom, strand, exons))
            pos = exons[-1][1] + 1 + GENE_GAP
        chrom_lengths[chrom] = pos - GENE_GAP + CHROM_FLANK
    return genes, pads, chrom_lengths


def _gtf_text(genes: list[_Gene]) -> str:
    lines = []
    for gene in sorted(genes, key=lambda g: (int(g.chrom), g.start)):
        gene_attrs = f'gene_id "{gene.gene_id}"; gene_name "{gene.gene_name}"; gene_biotype "protein_coding";'
        tx_attrs = f'{gene_attrs} transcript_id "{gene.transcript_id}"; transcript_name "{gene.transcript_name}";'
        common = f"{gene.chrom}\tcellfate"
        lines.append(f"{common}\tgene\t{gene.start}\t{gene.end}\t.\t{gene.strand}\t.\t{gene_attrs}")
        lines.append(f"{common}\ttranscript\t{gene.start}\t{gene.end}\t.\t{gene.strand}\t.\t{tx_attrs}")
        n = len(gene.exons)
        for k, (start, end) in enumerate(gene.exons):
            number = k + 1 if gene.strand == "+" else n - k
            lines.append(
                f"{common}\texon\t{start}\t{end}\t.\t{gene.strand}\t.\t{tx_attrs} exon_number \"{number}\";"
            )
    header = "#!genome-build cellfate-synthetic\n#!description simulated by cellfate.simulate.bam\n"
    return header + "\n".join(lines) + "\n"


def _umi_strings(indices: np.ndarray) -> list[str]:
    """12-base strings of the integers (base 4, most significant first)."""
    digits = (indices[:, None] >> (2 * np.arange(UMI_LENGTH - 1, -1, -1))) & 3
    return [bytes(row).decode() for row in _BASES[digits]]


def _bam_header(chrom_lengths: dict[str, int], seed: int) -> dict[str, object]:
    return {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [{"SN": c, "LN": n} for c, n in chrom_lengths.items()],
        "RG": [{"ID": "cellfate", "SM": "simulated"}],
        "PG": [{"ID": "cellfate.simulate.bam", "PN": "cellfate", "CL": f"write_velocyto_inputs(seed={seed})"}],
    }


def _alignment(gene: _Gene, seq: str, spliced: bool, k: int, a: int, side: int) -> tuple[int, list, str]:
    """(1-based start, CIGAR, sequence) of one read: across junction ``k`` (spliced) or a boundary of intron ``k``."""
    if spliced:
        exon_end, next_start = gene.exons[k][1], gene.exons[k + 1][0]
        start = exon_end - a + 1
        b = READ_LENGTH - a
        s0, n0 = start - gene.start, next_start - gene.start
        return start, [(0, a), (3, next_start - exon_end - 1), (0, b)], seq[s0:s0 + a] + seq[n0:n0 + b]
    boundary = gene.exons[k][1] + 1 if side == 0 else gene.exons[k + 1][0]
    start = boundary - a
    s0 = start - gene.start
    return start, [(0, READ_LENGTH)], seq[s0:s0 + READ_LENGTH]


def _write_reads(path: Path, spl: np.ndarray, uns: np.ndarray, barcodes: list[str], genes: list[_Gene],
                 chrom_lengths: dict[str, int], rng: np.random.Generator, seed: int) -> None:
    chrom_index = {c: i for i, c in enumerate(chrom_lengths)}
    n_cells = spl.shape[0]
    # UMIs: an odd multiplier permutes the integers modulo 4**12, so UMIs are distinct within each cell.
    umi_space = 4**UMI_LENGTH
    multiplier = int(rng.integers(0, umi_space // 2)) * 2 + 1
    offsets = rng.integers(0, umi_space, size=n_cells)
    next_umi = np.zeros(n_cells, dtype=np.int64)
    quality = pysam.qualitystring_to_array("F" * READ_LENGTH)
    cb_tags = [f"{b}-1" for b in barcodes]
    name_counter = 0
    with pysam.AlignmentFile(str(path), "wb", header=_bam_header(chrom_lengths, seed)) as out:
        for g, gene in enumerate(genes):
            n_spl, n_uns = spl[:, g], uns[:, g]
            n_total = int(n_spl.sum() + n_uns.sum())
            if n_total == 0:
                continue
            # The gene's reference sequence (seeded per gene so it does not depend on the counts).
            seq = _BASES[np.random.default_rng([seed, g]).integers(0, 4, size=gene.end - gene.start + 1)].tobytes().decode()
            cells = np.concatenate([np.repeat(np.arange(n_cells), n_spl), np.repeat(np.arange(n_cells), n_uns)])
            is_spliced = np.concatenate([np.ones(int(n_spl.sum()), bool), np.zeros(int(n_uns.sum()), bool)])
            left = rng.integers(MIN_PART, READ_LENGTH - MIN_PART + 1, size=n_total)
            which = rng.integers(0, len(gene.exons) - 1, size=n_total)  # junction / intron index
            side = rng.integers(0, 2, size=n_total)  # unspliced: 0 exon->intron, 1 intron->exon boundary
            # Unique UMIs per cell: consecutive per-cell indices through the permutation.
            umi_idx = np.empty(n_total, dtype=np.int64)
            for i, c in enumerate(cells):
                umi_idx[i] = (next_umi[c] * multiplier + offsets[c]) % umi_space
                next_umi[c] += 1
            umis = _umi_strings(umi_idx)
            for i in range(n_total):
                start, cigar, query = _alignment(gene, seq, bool(is_spliced[i]), int(which[i]), int(left[i]), side[i])
                read = pysam.AlignedSegment(out.header)
                read.query_name = f"sim{name_counter:09d}"
                name_counter += 1
                read.flag = 0 if gene.strand == "+" else 16
                read.reference_id = chrom_index[gene.chrom]
                read.reference_start = start - 1
                read.mapping_quality = 255
                read.cigartuples = cigar
                read.query_sequence = query
                read.query_qualities = quality
                read.set_tags([("NH", 1, "i"), ("CB", cb_tags[cells[i]], "Z"), ("UB", umis[i], "Z"),
                               ("RG", "cellfate", "Z")])
                out.write(read)
