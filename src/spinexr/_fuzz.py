"""Seeded mutation fuzzing of image files, for the read-boundary tests and ``benchmarks/fuzz_read.py``.

Each case is a seed file's bytes with byte flips, a truncation, an insertion (random bytes or a copy
of another part of the file) or a mix, drawn from one ``numpy`` generator, so a case number always
names the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

MUTATIONS = ("flip", "truncate", "insert", "duplicate", "mixed")


def mutate(data: bytes, rng: np.random.Generator, how: str | None = None) -> tuple[bytes, str]:
    """One mutation of ``data``; returns (bytes, what was done)."""
    how = how or MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    b = bytearray(data)
    n = len(b)
    if how == "flip":
        k = int(rng.integers(1, 17))
        # Headers hold most of the structure: half of the flips land in the first 1 KiB.
        pos = np.where(rng.random(k) < 0.5, rng.integers(0, min(n, 1024), k), rng.integers(0, n, k))
        for p in pos:
            b[int(p)] ^= 1 << int(rng.integers(8))
        return bytes(b), f"flip {k} bits"
    if how == "truncate":
        cut = int(rng.integers(0, n))
        return bytes(b[:cut]), f"truncate at {cut}"
    if how == "insert":
        at, k = int(rng.integers(0, n)), int(rng.integers(1, 257))
        return bytes(b[:at] + rng.integers(0, 256, k, dtype=np.uint8).tobytes() + b[at:]), f"insert {k} bytes at {at}"
    if how == "duplicate":
        src, k, at = int(rng.integers(0, n)), int(rng.integers(1, 513)), int(rng.integers(0, n))
        return bytes(b[:at] + b[src:src + k] + b[at:]), f"copy {k} bytes from {src} to {at}"
    out, steps = data, []
    for _ in range(int(rng.integers(2, 4))):
        out, what = mutate(out, rng, MUTATIONS[int(rng.integers(4))])
        if not out:
            break
        steps.append(what)
    return out, " + ".join(steps)


def fuzz_cases(seeds: dict[str, bytes], n: int, seed: int = 0) -> Iterator[tuple[int, str, str, bytes]]:
    """``n`` cases ``(number, seed name, mutation, bytes)``, cycling through the seeds in order."""
    rng = np.random.default_rng(seed)
    names = sorted(seeds)
    for i in range(n):
        name = names[i % len(names)]
        data, what = mutate(seeds[name], rng)
        yield i, name, what, data
