"""The hot loops of the corpus stage, compiled with numba (one fused pass each, GIL released).

Why compiled loops: a 20M-cell corpus has ~50 billion stored counts. In plain numpy every
per-entry step (gather the gene's token, compute the value, build a sort key, drop unknown genes)
is a separate pass over memory; fused here they cost one. The one expensive step, sorting, is
left to numpy's SIMD sort (``np.sort`` on uint64), several times faster than any comparison
sort a loop could run. All kernels take ``nogil=True`` so two chunks can be encoded on two
threads at once.

Sort keys (``fill_rank_keys``): one uint64 per stored value, ``value | position | token``,
sorted row by row (``sort_rows``):

* the high ``64 - pos_bits - token_bits`` bits hold the top bits of ``MAX - bits(v)``: for
  positive doubles the IEEE bit pattern is monotonic in the value, so a larger value gives a
  smaller key;
* the middle ``pos_bits`` hold the value's position in its CSR row (to find its count again);
* the low ``token_bits`` hold the token id, so sorted keys are read out without a lookup.

Values that differ only below the kept precision (~1e-7 relative and finer), exact ties
included, share a *bucket* (equal bits above position and token). ``emit_rank_value`` re-sorts every bucket that
reaches into the kept part of the row by the exact value, then by token id, so the order is
exactly "value descending, token id ascending" (the documented tie-break). The reference
tokenizer's unstable argsort agrees outside groups of equal values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DROPPED = np.uint64(0xFFFFFFFFFFFFFFFF)  # key of a value that is not tokenized: sorts last
_MAX_POSITIVE = np.uint64(0x7FFFFFFFFFFFFFFF)


@njit(nogil=True, cache=True)
def rank_value(x, inv_total, inv_median):
    """The reference's value, operation for operation: ((x * (1/n)) * 10000) * (1/median).

    Plain ``x / n * 1e4 / m`` rounds differently, which reorders nearly equal values.
    """
    return ((np.float64(x) * inv_total) * 10000.0) * inv_median


@njit(nogil=True, cache=True)
def _descending(v):
    """A uint64 that grows as the positive double ``v`` shrinks (IEEE order, bit for bit)."""
    return _MAX_POSITIVE - np.float64(v).view(np.uint64)


@njit(nogil=True, cache=True)
def fill_rank_keys(indptr, indices, data, row_pass, inv_total, col_token, col_inv_median, pos_bits, token_bits,
                   keys, kept):
    """Write a sort key per stored value and the kept count per row.

    A value is kept when its row passed QC, its gene has a token (``col_token >= 0``) and it is
    positive: an explicitly stored zero is not an expressed gene, so it is dropped (the
    reference tokenizer would give it a token, ranked last). Dropped values get the largest key,
    so they sort to the end of their row.
    """
    low_bits = np.uint64(pos_bits + token_bits)
    value_shift = np.uint64(pos_bits + token_bits - 1)  # the sign bit of a double is always 0 here
    n_rows = indptr.shape[0] - 1
    for r in range(n_rows):
        start, stop = indptr[r], indptr[r + 1]
        count = 0
        if row_pass[r]:
            inv_n = inv_total[r]
            for j in range(start, stop):
                c = indices[j]
                x = data[j]
                token = col_token[c]
                if token < 0 or not x > 0:
                    keys[j] = DROPPED
                    continue
                top = _descending(rank_value(x, inv_n, col_inv_median[c])) >> value_shift
                keys[j] = (top << low_bits) | (np.uint64(j - start) << np.uint64(token_bits)) | np.uint64(token)
                count += 1
        else:
            for j in range(start, stop):
                keys[j] = DROPPED
        kept[r] = count


def sort_rows(keys, indptr, kept):
    """Sort each row's keys in place with numpy's SIMD sort (rows are short: cache-resident)."""
    for r in np.flatnonzero(kept):
        keys[indptr[r] : indptr[r + 1]].sort()


@njit(nogil=True, cache=True)
def _insertion_sort(values, m):
    """Sort ``values[:m]`` in place: buckets are mostly 2-3 long, where a call to a general sort costs more."""
    for i in range(1, m):
        value = values[i]
        j = i - 1
        while j >= 0 and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value


@njit(nogil=True, cache=True)
def emit_rank_value(keys, kept, indptr, data, inv_total, col_inv_median_of_token, pos_bits, token_bits, max_genes,
                    first_token, last_token, scratch, tokens, offsets, rows):
    """Turn row-sorted keys into token rows; return the number of rows written.

    For each row with at least one kept value: ``first_token`` (if >= 0), the first ``max_genes``
    gene tokens in rank-value order, ``last_token`` (if >= 0). ``tokens`` receives the rows back
    to back, ``offsets[i]:offsets[i + 1]`` delimits row ``i`` and ``rows[i]`` is its row in the
    chunk. One pass per row; buckets past the cut are never looked at.

    A bucket's members share the top bits of ``MAX - bits(v)``, so their exact order is that of
    the remaining low bits; those and the token id fit one uint64 (``low bits << 32 | token``),
    which a plain sort of the bucket (``scratch``, at least one row long) orders exactly as
    "value descending, token id ascending", in O(k log k) even for large tie groups.
    """
    low_bits = np.uint64(pos_bits + token_bits)
    token_mask = (np.uint64(1) << np.uint64(token_bits)) - np.uint64(1)
    pos_mask = (np.uint64(1) << np.uint64(pos_bits)) - np.uint64(1)
    dropped_mask = (np.uint64(1) << np.uint64(pos_bits + token_bits - 1)) - np.uint64(1)
    out = 0
    n_out = 0
    offsets[0] = 0
    for r in range(kept.shape[0]):
        n = kept[r]
        if n == 0:
            continue
        base = indptr[r]
        end = base + n
        stop = base + min(n, max_genes)
        inv_n = inv_total[r]
        if first_token >= 0:
            tokens[out] = first_token
            out += 1
        i = base
        while i < stop:
            top = keys[i] >> low_bits
            if i + 1 == end or (keys[i + 1] >> low_bits) != top:
                tokens[out] = np.int32(keys[i] & token_mask)
                out += 1
                i += 1
                continue
            k = i + 2
            while k < end and (keys[k] >> low_bits) == top:
                k += 1
            m = k - i
            for q in range(m):
                key = keys[i + q]
                token = key & token_mask
                j = base + np.int64((key >> np.uint64(token_bits)) & pos_mask)
                v = rank_value(data[j], inv_n, col_inv_median_of_token[np.int64(token)])
                scratch[q] = ((_descending(v) & dropped_mask) << np.uint64(32)) | token
            if m <= 32:
                _insertion_sort(scratch, m)
            else:
                scratch[:m].sort()
            for q in range(min(m, stop - i)):
                tokens[out] = np.int32(scratch[q] & np.uint64(0xFFFFFFFF))
                out += 1
            i = k
        if last_token >= 0:
            tokens[out] = last_token
            out += 1
        rows[n_out] = r
        n_out += 1
        offsets[n_out] = out
    return n_out


@njit(nogil=True, cache=True)
def normalised_value(x, total):
    """``x / n * 10,000`` in float64, the arithmetic of the median definition (and of the exact check)."""
    return np.float64(x) / total * 10000.0


@njit(nogil=True, cache=True)
def raw_log_bin(x, total, log_low, inv_log_step):
    """The log-scale bin of a normalized count before clipping to the table: one formula for both passes."""
    return int(np.floor((np.log(normalised_value(x, total)) - log_low) * inv_log_step))


@njit(nogil=True, cache=True)
def collect_bin_values(indptr, indices, data, row_pass, totals, log_low, inv_log_step, n_bins, col_target,
                       lo_bin, hi_bin, out_target, out_bin, out_value):
    """Pass 2 of the exact medians: every value that falls in its gene's lo or hi median bin.

    ``col_target`` maps a file column to its row in the median targets (-1: not a target gene).
    Writes (target row, bin, value) triples into the ``out_*`` arrays (at least as long as the
    chunk) and returns how many. The bin is computed exactly as in pass 1, clipping included.
    """
    n = 0
    for r in range(indptr.shape[0] - 1):
        if not row_pass[r]:
            continue
        total = totals[r]
        for j in range(indptr[r], indptr[r + 1]):
            x = data[j]
            g = col_target[indices[j]]
            if g < 0 or not x > 0:
                continue
            b = min(max(raw_log_bin(x, total, log_low, inv_log_step), 0), n_bins - 1)
            if b == lo_bin[g] or b == hi_bin[g]:
                out_target[n] = g
                out_bin[n] = b
                out_value[n] = normalised_value(x, total)
                n += 1
    return n


@njit(nogil=True, cache=True)
def accumulate_log_histogram(indptr, indices, data, row_pass, totals, log_low, inv_log_step, hist, bins, grouped):
    """Add every positive value's normalized count (x / n * 10,000) to its gene's log-scale bin.

    ``hist`` is genes x bins. Incrementing it in CSR order would touch a random gene's row per
    value (a cache miss each, the table being ~150 MB), so the chunk's bin indices are first
    grouped by gene (a counting sort into ``grouped``; ``bins`` is scratch, both at least as long
    as the chunk) and each gene's row is then updated in one go. Values outside the binned range
    go to the first or last bin and are counted in the return value.
    """
    n_genes, n_bins = hist.shape
    per_gene = np.zeros(n_genes + 1, dtype=np.int64)
    clipped = 0
    for r in range(indptr.shape[0] - 1):
        keep = row_pass[r]
        total = totals[r]
        for j in range(indptr[r], indptr[r + 1]):
            x = data[j]
            if not keep or not x > 0:
                bins[j] = -1
                continue
            b = raw_log_bin(x, total, log_low, inv_log_step)
            if b < 0:
                b = 0
                clipped += 1
            elif b >= n_bins:
                b = n_bins - 1
                clipped += 1
            bins[j] = b
            per_gene[indices[j] + 1] += 1
    for g in range(n_genes):  # start of each gene's group
        per_gene[g + 1] += per_gene[g]
    cursor = per_gene[:-1].copy()
    for j in range(indptr[-1]):
        if bins[j] >= 0:
            g = indices[j]
            grouped[cursor[g]] = bins[j]
            cursor[g] += 1
    for g in range(n_genes):
        for k in range(per_gene[g], per_gene[g + 1]):
            hist[g, grouped[k]] += 1
    return clipped
