"""Gallery search benchmark: FAISS (exact flat, HNSW, IVF) against a NumPy brute force on 10k, 100k and 1M
synthetic 128-d unit vectors (identity clusters, like real embeddings): queries/s at batches of 1,000 queries,
recall@10 against exact search, build seconds, on this machine's threads.

Run:  .venv/bin/python bench/bench_gallery.py [--sizes 10000 100000 1000000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import cpu_model

from visionkit.inference.gallery import faiss_index


def vectors(count: int, queries: int, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(`count` gallery vectors, `queries` query vectors), unit length, around count/10 identity centres (spread
    0.6 of a centre's length: cosine about 0.73 within an identity, about 0 between two): queries are new images
    of the gallery's identities, as a face search asks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(count // 10, 1), dim), dtype=np.float32)

    def around(n: int) -> np.ndarray:
        out = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return around(count), around(queries)


def numpy_search(gallery: np.ndarray, queries: np.ndarray, k: int, chunk: int = 250) -> np.ndarray:
    """The k nearest by inner product: a matrix product and a partial sort per chunk of queries."""
    found = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ gallery.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        found.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, FAISS {faiss.__version__} on {faiss.omp_get_max_threads()} threads\n")
    print("| vectors | search | build s | queries/s | recall@10 vs exact | speed vs NumPy |")
    print("|---:|---|---:|---:|---:|---:|")
    for size in args.sizes:
        data, queries = vectors(size, args.queries)
        start = time.perf_counter()
        truth = numpy_search(data, queries, 10)
        numpy_qps = args.queries / (time.perf_counter() - start)
        print(f"| {size:,} | NumPy brute force | - | {numpy_qps:,.0f} | 1.000 | 1.00× |", flush=True)
        for kind in ("flat", "hnsw", "ivf"):
            start = time.perf_counter()
            index = faiss_index(data, kind)
            built = time.perf_counter() - start
            index.search(queries[:10], 10)  # warm-up
            rounds, found, start = 0, None, time.perf_counter()
            while rounds == 0 or time.perf_counter() - start < 1.0:
                _, found = index.search(queries, 10)
                rounds += 1
            qps = rounds * args.queries / (time.perf_counter() - start)
            cells = [f"{built:.1f}", f"{qps:,.0f}", f"{recall(found, truth):.3f}", f"{qps / numpy_qps:.1f}×"]
            print(f"| {size:,} | FAISS {kind} | {' | '.join(cells)} |", flush=True)
            del index


if __name__ == "__main__":
    main()
