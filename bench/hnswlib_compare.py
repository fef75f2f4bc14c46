#!/usr/bin/env python3
"""Python hnswlib on the same data as `peers hnsw`, for a side-by-side row.

    cargo run --release -p ebb-bench --bin peers -- hnsw --json --write-data /tmp/hnsw_data
    pip install hnswlib numpy
    python3 bench/hnswlib_compare.py /tmp/hnsw_data

Reads base.f32 / queries.f32 (raw little-endian f32 rows) and meta.json
({"n","nq","dim"}), and deleted.u64 (the ids `peers hnsw` deleted) when
present. Prints JSON lines with the fields `peers hnsw` prints: phases
fresh, deleted50 (mark_deleted, hnswlib's tombstones) and fresh_live. RSS
is the process's (hnswlib allocates outside Python's heap, so heap_bytes is
not measured and printed as null). hnswlib has no rebuild: the rebuilt
phase is ebb's alone.
"""

import json
import os
import sys
import time

import hnswlib
import numpy as np

K, EF, M, EFC = 10, 64, 16, 200


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def truth(base, live_ids, queries):
    live = base[live_ids]
    out = []
    for q in queries:
        d = ((live - q) ** 2).sum(axis=1)
        top = np.argpartition(d, K)[:K]
        out.append(set(live_ids[top].tolist()))
    return out


def measure(index, queries, truth_sets):
    index.set_ef(EF)
    index.set_num_threads(1)
    rounds = max(1, -(-2000 // len(queries)))
    start = time.perf_counter()
    for _ in range(rounds):
        for q in queries:
            index.knn_query(q, k=K)
    qps = rounds * len(queries) / (time.perf_counter() - start)
    labels, _ = index.knn_query(queries, k=K)
    hits = sum(len(set(row.tolist()) & t) for row, t in zip(labels, truth_sets))
    return hits / (len(queries) * K), qps


def build(base, ids):
    index = hnswlib.Index(space="l2", dim=base.shape[1])
    index.init_index(max_elements=len(ids), ef_construction=EFC, M=M)
    index.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    index.add_items(base[ids], ids)
    return index, time.perf_counter() - start


def main():
    d = sys.argv[1]
    meta = json.load(open(os.path.join(d, "meta.json")))
    dim = meta["dim"]
    base = np.fromfile(os.path.join(d, "base.f32"), dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(os.path.join(d, "queries.f32"), dtype="<f4").reshape(-1, dim)
    n = len(base)
    all_ids = np.arange(n)
    deleted_path = os.path.join(d, "deleted.u64")
    if os.path.exists(deleted_path):
        deleted = np.fromfile(deleted_path, dtype="<u8").astype(np.int64)
    else:
        deleted = np.random.RandomState(11).permutation(n)[: n // 2]
    mask = np.ones(n, dtype=bool)
    mask[deleted] = False
    live_ids = all_ids[mask]

    rows = []
    r0 = rss_bytes()
    index, secs = build(base, all_ids)
    recall, qps = measure(index, queries, truth(base, all_ids, queries))
    rows.append({"backend": "hnswlib", "phase": "fresh", "ef": EF, "recall_at_10": recall,
                 "qps_1thread": qps, "memory_bytes": None, "heap_bytes": None,
                 "rss_bytes": rss_bytes() - r0, "build_secs": secs})
    for i in deleted:
        index.mark_deleted(int(i))
    truth_live = truth(base, live_ids, queries)
    recall, qps = measure(index, queries, truth_live)
    rows.append({"backend": "hnswlib", "phase": "deleted50", "ef": EF, "recall_at_10": recall,
                 "qps_1thread": qps, "memory_bytes": None, "heap_bytes": None,
                 "rss_bytes": rss_bytes() - r0})
    del index
    r1 = rss_bytes()
    live_index, secs = build(base, live_ids)
    recall, qps = measure(live_index, queries, truth_live)
    rows.append({"backend": "hnswlib", "phase": "fresh_live", "ef": EF, "recall_at_10": recall,
                 "qps_1thread": qps, "memory_bytes": None, "heap_bytes": None,
                 "rss_bytes": rss_bytes() - r1, "build_secs": secs})
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
