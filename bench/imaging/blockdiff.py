#!/usr/bin/env python3
"""blockdiff.py A B [BS]: bytes in BS-sized blocks (default 4096) that differ between two
equal-size disk images, skipping regions that are holes in both. The true size of a change."""
import os, sys
a, b = sys.argv[1], sys.argv[2]
bs = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
size = os.fstat(fa).st_size
assert size == os.fstat(fb).st_size, "sizes differ"
def next_data(fd, off):
    try:
        return os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        return size
STEP = 8 << 20
changed = 0
off = 0
while off < size:
    nd = min(next_data(fa, off), next_data(fb, off))
    if nd >= size:
        break
    off = nd - nd % STEP
    n = min(STEP, size - off)
    da, db = os.pread(fa, n, off), os.pread(fb, n, off)
    if da != db:
        changed += sum(1 for i in range(0, n, bs) if da[i:i + bs] != db[i:i + bs])
    off += n
print(f"changed_blocks={changed} changed_bytes={changed * bs}")
