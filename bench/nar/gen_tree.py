#!/usr/bin/env python3
"""Generates a deterministic, Linux-source-like tree for the NAR benchmark.

Layout: top-level subsystem directories, nested 2-4 levels, mostly small
text-like source files (log-normal sizes around 8 KiB), some medium objects,
a few large blobs, executable scripts and symlinks. Total >= the requested
size (default 1.1 GiB). Usage: gen_tree.py DEST [TOTAL_MIB]
"""
import os
import random
import sys

dest = sys.argv[1]
total = int(sys.argv[2] if len(sys.argv) > 2 else 1126) * 1024 * 1024
rng = random.Random(20261121)
os.makedirs(dest, exist_ok=True)

tops = ["arch", "block", "crypto", "drivers", "fs", "include", "init", "ipc", "kernel",
        "lib", "mm", "net", "scripts", "security", "sound", "tools", "virt", "Documentation"]
words = [b"static", b"int", b"struct", b"return", b"if", b"else", b"for", b"while",
         b"unsigned", b"long", b"void", b"const", b"char", b"#include", b"#define",
         b"{", b"}", b"(", b")", b";", b"->", b"=", b"==", b"0", b"1", b"NULL",
         b"kmalloc", b"spin_lock", b"mutex_unlock", b"EXPORT_SYMBOL", b"\n", b"\t"]

# Pool of text to slice from: cheap to generate, source-like bytes.
text = b" ".join(rng.choice(words) for _ in range(2_000_000))
blob = rng.randbytes(64 * 1024 * 1024)

dirs = []
for t in tops:
    for i in range(rng.randint(4, 14)):
        d = os.path.join(t, f"sub{i}")
        for j in range(rng.randint(0, 2)):
            d = os.path.join(d, f"part{j}")
        dirs.append(d)
for d in dirs:
    os.makedirs(os.path.join(dest, d), exist_ok=True)

written = 0
n = 0
large_left = 6
while written < total:
    d = rng.choice(dirs)
    r = rng.random()
    if r < 0.98:
        size = min(int(rng.lognormvariate(8.8, 1.1)), 400_000)
        name = f"file{n}.{rng.choice(['c', 'h', 'S', 'txt', 'rst'])}"
        off = rng.randrange(0, len(text) - size - 1)
        data = text[off:off + size]
        mode = 0o644
    elif r < 0.995 or large_left == 0:
        size = rng.randint(100_000, 3_000_000)
        name = f"obj{n}.o"
        off = rng.randrange(0, len(blob) - size - 1)
        data = blob[off:off + size]
        mode = 0o755 if rng.random() < 0.2 else 0o644
    else:
        large_left -= 1
        size = rng.randint(20, 60) * 1024 * 1024
        name = f"vmlinux{n}"
        data = (blob * 2)[:size]
        mode = 0o755
    p = os.path.join(dest, d, name)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, mode)
    if rng.random() < 0.01:
        os.symlink(name, os.path.join(dest, d, f"link{n}"))
    written += size
    n += 1

with open(os.path.join(dest, ".complete"), "w") as f:
    f.write(f"{n} files, {written} bytes\n")
print(f"generated {n} files, {written / 2**20:.0f} MiB in {dest}")
