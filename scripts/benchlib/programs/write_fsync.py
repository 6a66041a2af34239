"""write_fsync.py SRC DST: copy SRC to DST in 1 MiB writes, then fsync DST."""

import os
import sys

src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f, open(dst, "wb") as g:
    while chunk := f.read(1 << 20):
        g.write(chunk)
    g.flush()
    os.fsync(g.fileno())
