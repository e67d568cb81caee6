#!/usr/bin/env python
"""The tokenizer's shard writer beside ``datasets``' own ways of writing the same folder, same run.

    PYTHONPATH=src .venv/bin/python benchmarks/shard_writer_bench.py --cells 5000 20000 40000

Each pass writes N synthetic tokenized cells (lengths 1,024-2,048, as the 2,048-token cut leaves
them; one string attribute) in chunks of 1,024 cells, the way ``tokenize_h5ad`` hands them over,
into a ``save_to_disk`` folder, in a fresh process:

- ``ours``: ``cellfate.corpus.shards`` (Arrow record batches streamed to the final files);
- ``from_generator``: ``datasets.Dataset.from_generator`` over the cells, then ``save_to_disk``;
- ``from_file``: the batches streamed to one Arrow file, then ``Dataset.from_file(...).save_to_disk``.

Printed per pass: wall and CPU seconds (``import datasets`` included: a tokenize job pays it),
peak RSS, and the ratios of each ``datasets`` way over ours. Every folder is read back with
``datasets.load_from_disk`` and must hold N rows with the same features.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KINDS = ("ours", "from_generator", "from_file")


def chunks(n_cells: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1024, 2049, n_cells)
    for start in range(0, n_cells, 1024):
        offsets = np.concatenate([[0], np.cumsum(lengths[start : start + 1024])]).astype(np.int32)
        tokens = rng.integers(4, 20_000, offsets[-1]).astype(np.int32)
        yield tokens, offsets, np.array(["t cell"] * (len(offsets) - 1), dtype=object)


def write(kind: str, n_cells: int, out: Path) -> None:
    import pyarrow as pa

    if kind == "ours":
        from cellfate.corpus.shards import shard_directory, token_batch

        with shard_directory(out, {"cell_type": pa.string()}) as writer:
            for tokens, offsets, types in chunks(n_cells):
                attributes = {"cell_type": pa.array(types, pa.string())}
                writer.write(token_batch(writer.schema, tokens, offsets, attributes))
        return
    import datasets

    if kind == "from_generator":
        features = datasets.Features(
            {
                "input_ids": datasets.List(datasets.Value("int32")),
                "length": datasets.Value("int64"),
                "cell_type": datasets.Value("string"),
            }
        )

        def cells():
            for tokens, offsets, types in chunks(n_cells):
                for i, cell_type in enumerate(types):
                    row = tokens[offsets[i] : offsets[i + 1]]
                    yield {"input_ids": row, "length": len(row), "cell_type": cell_type}

        dataset = datasets.Dataset.from_generator(
            cells, features=features, cache_dir=str(out) + ".cache", fingerprint=f"bench-{n_cells}"
        )
    else:
        schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("length", pa.int64()), ("cell_type", pa.string())])
        stream = str(out) + ".arrow"
        with pa.OSFile(stream, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for tokens, offsets, types in chunks(n_cells):
                ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens))
                lengths = pa.array(np.diff(offsets).astype(np.int64))
                columns = [ids, lengths, pa.array(types, pa.string())]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
        dataset = datasets.Dataset.from_file(stream)
    dataset.save_to_disk(str(out))


def child(kind: str, n_cells: int, folder: str) -> None:
    out = Path(folder) / kind
    wall, cpu = time.perf_counter(), time.process_time()
    write(kind, n_cells, out)
    result = {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    import datasets

    loaded = datasets.load_from_disk(str(out))
    assert len(loaded) == n_cells and set(loaded.features) == {"input_ids", "length", "cell_type"}
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    header = ["cells", "writer", "wall s", "CPU s", "peak RSS MB", "CPU / ours", "RSS / ours"]
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (7, 15, 7, 6, 12, 10, 10), strict=True)))
    for n in args.cells:
        results = {}
        for kind in KINDS:
            folder = tempfile.mkdtemp(dir=args.workdir)
            try:
                command = [sys.executable, __file__, "_child", kind, str(n), folder]
                done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(f"{kind} at {n} cells failed:\n{done.stderr[-3000:]}")
            results[kind] = r = json.loads(lines[0][7:])
            ours = results["ours"]
            print(f"{n:>7,} {kind:>15} {r['wall_s']:>7.1f} {r['cpu_s']:>6.2f} {r['peak_rss_mb']:>12.0f} "
                  f"{r['cpu_s'] / ours['cpu_s']:>9.1f}x {r['peak_rss_mb'] / ours['peak_rss_mb']:>9.2f}x", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
