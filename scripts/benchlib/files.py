"""Input files and trees for the workloads, and the checks that outputs match them."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from bench import BenchError, MiB, same_content

KiB = 1024


def make_small_files(folder: Path, count: int, size: int = 4 * KiB) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(size))


def tree_digest(folder: Path) -> str:
    """Names, sizes and contents of every file under folder, as one hash."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder)).encode()
        if p.is_symlink():
            h.update(b"L" + rel + os.readlink(p).encode())
        elif p.is_file():
            h.update(b"F" + rel + p.read_bytes())
        elif p.is_dir():
            h.update(b"D" + rel)
    return h.hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def verify_same(a: Path, b: Path, what: str) -> None:
    if not same_content(a, b):
        raise BenchError(f"{what}: {b} differs from {a}")


def verify_tree(a: Path, b: Path, what: str) -> None:
    if tree_digest(a) != tree_digest(b):
        raise BenchError(f"{what}: the tree {b} differs from {a}")


def make_source_tarball(tmp: Path, limit: int) -> tuple[Path, int]:
    """A tar of up to `limit` regular files from the venv's site-packages (real source)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    tarball = tmp / "src.tar"
    n = 0
    with tarfile.open(tarball, "w") as tar:
        for pkg in sorted(site.iterdir()):
            if n >= limit:
                break
            for p in sorted(pkg.rglob("*")) if pkg.is_dir() else [pkg]:
                if n >= limit:
                    break
                if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
                    tar.add(p, arcname=str(p.relative_to(site)), recursive=False)
                    n += 1
    return tarball, n


def vm_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
