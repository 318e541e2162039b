#!/usr/bin/env python3
"""Generates the benchmark closure's source trees under DIR: many paths of
mixed sizes (small config-like trees, medium libraries, a few large
blobs), half of each file's bytes random (incompressible), half text.
Deterministic for a given seed. Prints the total bytes written."""
import os
import random
import sys

def main():
    out, total_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    target = total_mib << 20
    # (count weight, min size, max size, files per path)
    kinds = [(60, 2 << 10, 256 << 10, 6), (30, 1 << 20, 8 << 20, 4), (10, 16 << 20, 48 << 20, 1)]
    written, i = 0, 0
    while written < target:
        k = rng.choices(kinds, weights=[k[0] for k in kinds])[0]
        d = os.path.join(out, f"p{i:04d}")
        os.makedirs(os.path.join(d, "share"), exist_ok=True)
        for f in range(k[3]):
            size = rng.randint(k[1], k[2])
            half = size // 2
            text = (f"line {i} {f} " * 8 + "\n").encode()
            body = os.urandom(half) + (text * (half // len(text) + 1))[: size - half]
            sub = "share" if f % 2 else ""
            with open(os.path.join(d, sub, f"f{f}.dat"), "wb") as fh:
                fh.write(body)
            written += size
        os.symlink("share/f1.dat" if k[3] > 1 else "f0.dat", os.path.join(d, "link"))
        i += 1
    print(written, i)

main()
