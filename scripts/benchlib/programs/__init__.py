"""The Python programs the benchmarks time as subprocesses, one file each.

Each is run by path with the interpreter csfs runs on (Env.py), so that its
start-up is comparable with the csfs CLI's; they import nothing from csfs or
from the benchmark itself.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def program_path(name: str) -> Path:
    path = HERE / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"no benchmark program {name!r}")
    return path
