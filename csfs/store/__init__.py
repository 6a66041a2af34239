"""Storage backends: opaque bytes under validated keys (see base.py).

``open_store`` turns a URL into a backend wrapped in retries.  The S3 backend
is imported only when asked for, so local use never pays for loading boto3.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

from csfs.store.base import ObjectInfo, Store, validate_key
from csfs.store.local import LocalStore
from csfs.store.retry import RetryStore

__all__ = ["LocalStore", "ObjectInfo", "RetryStore", "Store", "open_store", "validate_key"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _path_style(path_style: bool | None, endpoint_url: str | None) -> bool:
    if path_style is not None:
        return path_style
    env = os.environ.get("CSFS_S3_PATH_STYLE", "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    # moto, Ceph RGW and MinIO behind a custom endpoint need path-style;
    # AWS itself prefers virtual-hosted buckets.
    return endpoint_url is not None


def open_store(
    url: str, *, endpoint_url: str | None = None, path_style: bool | None = None
) -> Store:
    """Open ``file:///abs/path``, a plain folder path, or ``s3://bucket[/prefix]``.

    The S3 endpoint is ``endpoint_url``, else ``$AWS_ENDPOINT_URL``, else AWS;
    credentials come from boto3's standard chain.  Raises ValueError for a URL
    that names no supported store.
    """
    store: Store
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"invalid store URL {url!r}: missing bucket name (s3://bucket/prefix)")
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except ValueError:
                raise ValueError(f"invalid store URL {url!r}: bad prefix {prefix!r}") from None
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        from csfs.store.s3 import S3Store

        store = S3Store(
            bucket, prefix, endpoint_url=endpoint, path_style=_path_style(path_style, endpoint)
        )
    elif url.startswith("file://"):
        path = unquote(url[len("file://") :])
        if not path.startswith("/"):
            raise ValueError(f"invalid store URL {url!r}: use file:///absolute/path")
        store = LocalStore(path)
    elif "://" in url or not url:
        raise ValueError(
            f"unsupported store URL {url!r}: use a folder path, file:///path or s3://bucket/prefix"
        )
    else:
        store = LocalStore(url)
    return RetryStore(store)
