"""The one exception tree of csfs.

Every error a user can see derives from :class:`CsfsError`.  Each carries a
one-line message, an optional hint, and a stable exit code that the CLI uses.
Messages never contain key material or plaintext.
"""

from __future__ import annotations


class CsfsError(Exception):
    """Base of every csfs error."""

    exit_code = 1
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class UsageError(CsfsError):
    """The caller asked for something that cannot work (bad path, bad option value)."""

    exit_code = 2


class FormatError(CsfsError):
    """Bytes that do not follow docs/format.md: bad magic, bad length, unknown version."""

    exit_code = 3
    default_hint = "the file is not a csfs object, or it is corrupted"


class AuthenticationError(CsfsError):
    """Data failed authentication: it was tampered with, corrupted, or moved."""

    exit_code = 4
    default_hint = "the data may have been tampered with; nothing was written"


class NoMatchingKeyError(CsfsError):
    """None of the envelope's wrapped keys opens with the given identity."""

    exit_code = 5
    default_hint = "decrypt with a private key the file was encrypted to (--key)"


class KeyFileError(CsfsError):
    """A key file is missing, unreadable, of the wrong kind, or locked by a bad passphrase."""

    exit_code = 6


class StoreError(CsfsError):
    """The storage backend failed."""

    exit_code = 7


class NotFound(StoreError):  # noqa: N818 - reads better at call sites than NotFoundError
    """The object or path does not exist."""

    exit_code = 8


class PreconditionFailed(StoreError):  # noqa: N818
    """A conditional write lost: the object exists, or its ETag changed."""

    exit_code = 9


class TransientStoreError(StoreError):
    """A failure worth retrying (network, throttling, 5xx)."""

    exit_code = 10


class ConflictError(CsfsError):
    """Two writers changed the same thing and the change could not be merged."""

    exit_code = 11


class ContentionError(ConflictError):
    """A change kept losing the race to other writers and was given up after its
    retries. Nothing was changed; trying again later may succeed."""


class IntegrityError(AuthenticationError):
    """The vault's structure is inconsistent (missing or unexpected object)."""


class AlreadyExists(UsageError):  # noqa: N818
    """The target name is taken."""


class NotADirectory(UsageError):  # noqa: N818
    """A path component, or the target, is not a directory."""


class IsADirectory(UsageError):  # noqa: N818
    """A file operation was asked of a directory."""


class DirectoryNotEmpty(UsageError):  # noqa: N818
    """A directory that must be empty is not."""


class NotSupported(UsageError):  # noqa: N818
    """An operation csfs deliberately does not do (hard links, for example)."""


class AccessDenied(UsageError):  # noqa: N818
    """This key may not do that here: a read-only share, the Shared folders, or
    administration by someone other than the owner."""

    exit_code = 12


class CrossShare(UsageError):  # noqa: N818
    """A move between places shared differently: EXDEV, so that mv copies instead."""


class NameTooLong(UsageError):  # noqa: N818
    """A file or extended attribute name over its limit (ENAMETOOLONG)."""


class NotPermitted(UsageError):  # noqa: N818
    """The caller may not change this (chown by a non-owner, for example): EPERM."""


class FileTooBig(UsageError):  # noqa: N818
    """A write or truncate past the largest file the format can hold (2^48 bytes): EFBIG."""


class XattrMissing(UsageError):  # noqa: N818
    """No extended attribute of that name (ENODATA)."""


class XattrTooBig(UsageError):  # noqa: N818
    """An extended attribute value over the per-value limit (E2BIG)."""


class XattrNoSpace(UsageError):  # noqa: N818
    """The entry's extended attributes would exceed their total limit (ENOSPC)."""


class XattrUnsupported(UsageError):  # noqa: N818
    """An extended attribute namespace csfs does not store (ENOTSUP)."""


class ReadOnlyMount(UsageError):  # noqa: N818
    """A change asked of a mount made with --read-only (EROFS)."""


class BadHandle(UsageError):  # noqa: N818
    """A file handle this mount never gave out, or has already released (EBADF)."""


class UploadImpossible(StoreError):  # noqa: N818
    """A queued upload that no retry can make succeed: its object key holds other
    bytes, or its local ciphertext is gone. The mount quarantines it."""
