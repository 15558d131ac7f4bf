"""Milliseconds per identify-side index query against libraries of 100,
10,000 and 1,000,000 references (synthetic unit vectors of the default
embedder's size: the index part of matching does not depend on what the
vectors show, though random vectors are its hardest case).

    .venv/bin/python -m bench.matching [--sizes 100 10000 1000000] [--queries 200] [--dtype f16|i8|f32]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sidecar.config import Settings
from sidecar.inference.manifest import load_manifest
from sidecar.library import index as index_module
from sidecar.library.index import ReferenceIndex
from sidecar.stages.embed import appearance_dim

SETTINGS = Settings()
DIM = appearance_dim(load_manifest(SETTINGS.models_dir).get(SETTINGS.embedder))  # type: ignore[arg-type]


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dtype", choices=["f16", "i8", "f32"], help=f"vector storage to compare (default {index_module.DTYPE})")
    args = parser.parse_args()
    if args.dtype:
        index_module.DTYPE = args.dtype
    rng = np.random.default_rng(0)
    print(f"{DIM}-d cosine HNSW (usearch, {index_module.DTYPE} vectors), one query at a time, 50 neighbours each")
    print("| references | build s | index file MB | open (mmap) ms | query p50 ms | query p99 ms | recall@1 vs exact "
          "| similarity error max | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            index = ReferenceIndex(Path(tmp), "bench", DIM)
            ids = np.arange(1, size + 1, dtype=np.uint64)
            vectors = np.empty((size, DIM), np.float32)
            for start in range(0, size, 100_000):  # generate in chunks to bound memory
                vectors[start : start + 100_000] = unit_vectors(rng, min(100_000, size - start))
            started = time.perf_counter()
            index.open(ids, vectors)  # no saved file: builds and saves
            build = time.perf_counter() - started
            started = time.perf_counter()
            reopened = ReferenceIndex(Path(tmp), "bench", DIM)
            reopened.open(ids, vectors)
            open_ms = (time.perf_counter() - started) * 1e3
            # queries near a stored vector, as a photo of an enrolled car is
            targets = rng.integers(0, size, args.queries)
            queries = vectors[targets] + 0.02 * unit_vectors(rng, args.queries)
            times, hits, error = [], 0, 0.0
            for query, target in zip(queries, targets):
                started = time.perf_counter()
                keys, similarities = reopened.search(query[None], 50)
                times.append((time.perf_counter() - started) * 1e3)
                hits += int(keys[0, 0]) == int(ids[target])
                exact = vectors[keys[0].astype(np.int64) - 1] @ (query / np.linalg.norm(query))
                error = max(error, float(np.abs(exact - similarities[0]).max()))
            times.sort()
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            file_mb = reopened.path.stat().st_size / 1e6
            peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
            print(f"| {size:,} | {build:.1f} | {file_mb:.0f} | {open_ms:.1f} | {statistics.median(times):.3f} | {p99:.3f} "
                  f"| {hits / len(times):.1%} | {error:.4f} | {peak_gb:.1f} |", flush=True)


if __name__ == "__main__":
    main()
