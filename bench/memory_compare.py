#!/usr/bin/env python3
"""Top allocation sites that grew between two heap profiles, as a table.

    python3 bench/memory_compare.py A B [--metric gb|eb|tb|mb] [--top N] [--frames K]

A and B are dhat profiles (dhat-heap.json, from `just heap`): every
allocation site (the first K frames of its stack below the allocator) is
summed over both files and the sites are listed by how much the chosen
figure grew from A to B:

- gb: bytes live at the profile's global peak (default: what the peak is
  made of);
- eb: bytes still live at exit (what a run left behind);
- tb: bytes allocated in total (churn);
- mb: the site's own peak.

Heaptrack files (heaptrack.*.zst or .gz, from `just memory-profile`) are
handed to `heaptrack_print --diff` instead, which prints the same kind of
table in its own format.

Standard library only.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys

# Frames that are the allocator's or the standard library's, not the
# caller's: by source path (std, alloc, core; a registry crate, whose path
# dhat writes with its version, such as dhat-0.3.3/ or hashbrown-0.17.2/)
# and by function (the allocation plumbing inlined into callers).
# (The standard library's own paths come without a crate: src/vec/...)
LIBRARY_PATH = re.compile(
    r"^(alloc|core|std|collections|slice)/|-[0-9]+\.[0-9]+\.[0-9]+[^/]*/"
    r"|^src/(alloc|boxed|cell|collections|io|iter|ops|raw|rt|slice|string|sync|sys|thread|vec)(/|\.rs)"
)
PLUMBING = re.compile(
    r"^(alloc|alloc_zeroed|realloc|dealloc|__rust_\w+|__rdl_\w+|allocate\w*|alloc_impl\w*|"
    r"grow\w*|finish_grow|reserve\w*|do_reserve_and_handle|try_reserve\w*|with_capacity\w*|"
    r"box_new\w*|new_uninit\w*|try_allocate_in|allocate_in|\[root\])(<.*>)?$"
)
FRAME = re.compile(r"^(?:0x[0-9a-f]+: )?(?P<func>.*?)(?: \((?P<path>[^()]*):\d+:\d+\))?$")


def caller_frame(name):
    """The frame as `function (path)` if it is the caller's code, else None."""
    m = FRAME.match(name)
    func, path = m.group("func"), m.group("path") or ""
    if PLUMBING.match(func) or LIBRARY_PATH.search(path) or "ebb-leak/src/alloc.rs" in path:
        return None
    return f"{func} ({path})" if path else func


def site_frames(profile, fs, frames):
    out = []
    for i in fs:
        frame = caller_frame(profile["ftbl"][i])
        if frame is None:
            continue
        out.append(frame)
        if len(out) == frames:
            break
    return " <- ".join(out) or "(unknown)"


def sites(path, metric, frames):
    with open(path) as f:
        profile = json.load(f)
    if profile.get("dhatFileVersion") != 2:
        sys.exit(f"{path}: not a dhat profile (dhatFileVersion 2)")
    if metric not in ("gb", "eb", "tb", "mb"):
        sys.exit(f"unknown metric {metric}")
    total = {}
    for pp in profile["pps"]:
        key = site_frames(profile, pp["fs"], frames)
        total[key] = total.get(key, 0) + pp.get(metric, 0)
    return total


def human(n):
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return f"{sign}{n}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--metric", default="gb")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--frames", type=int, default=3)
    args = ap.parse_args()
    if not (args.a.endswith(".json") and args.b.endswith(".json")):
        tool = shutil.which("heaptrack_print")
        if tool is None:
            sys.exit("heaptrack files need heaptrack_print (apt-get install heaptrack)")
        sys.exit(subprocess.call([tool, "--diff", args.a, args.b]))
    a = sites(args.a, args.metric, args.frames)
    b = sites(args.b, args.metric, args.frames)
    rows = []
    for key in set(a) | set(b):
        rows.append((b.get(key, 0) - a.get(key, 0), a.get(key, 0), b.get(key, 0), key))
    rows.sort(key=lambda r: -r[0])
    total_a, total_b = sum(a.values()), sum(b.values())
    print(f"metric {args.metric}: A {human(total_a)}, B {human(total_b)}, "
          f"growth {human(total_b - total_a)}")
    print(f"| growth | A | B | site (first {args.frames} frames) |")
    print("|---:|---:|---:|---|")
    for grew, va, vb, key in rows[: args.top]:
        if grew <= 0:
            break
        print(f"| {human(grew)} | {human(va)} | {human(vb)} | {key} |")


if __name__ == "__main__":
    main()
