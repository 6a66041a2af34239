"""The FUSE binding (mfusepy); the only package that imports it.

mfusepy prefers libfuse2 when both are installed (Debian keeps libfuse2 when
fuse3 replaces fuse). libfuse3 gives 1 MiB writes and passes every setattr
through (libfuse 2.9 drops a utimens that sets only the modification time),
so point mfusepy at libfuse3 before it is first imported.
"""

import os
from ctypes.util import find_library

if "FUSE_LIBRARY_PATH" not in os.environ:
    _fuse3 = find_library("fuse3")
    if _fuse3:
        os.environ["FUSE_LIBRARY_PATH"] = _fuse3
