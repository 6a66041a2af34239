"""The one table in csfs/fuse/ops.py that turns library errors into errno."""

from __future__ import annotations

import errno

import pytest

from csfs.errors import BadHandle, ContentionError, CsfsError, ReadOnlyMount, UsageError
from csfs.fuse.ops import errno_for


@pytest.mark.parametrize(
    "exc,code",
    [
        (ReadOnlyMount("read-only mount"), errno.EROFS),
        (BadHandle("bad file handle"), errno.EBADF),
        # Given up against other writers: an I/O error, logged and kept for `csfs status`.
        (ContentionError("gave up"), errno.EIO),
        (UsageError("anything else the caller got wrong"), errno.EINVAL),
        # Builtin OSErrors (local disk trouble) keep their own errno.
        (PermissionError(errno.EACCES, "scratch file"), errno.EACCES),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else "",
)
def test_errno_of(exc: BaseException, code: int) -> None:
    assert errno_for(exc) == code
    assert isinstance(exc, (CsfsError, OSError))
