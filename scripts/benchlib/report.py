"""The rows and ratios a benchmark run reports, and how they are printed."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field

from bench import human


@dataclass
class Row:
    section: str
    tool: str
    operation: str
    seconds: float
    amount: str = ""  # what was moved: "256 MiB", "500 files"
    rate: str = ""  # "MB/s" or "files/s" figure, formatted
    note: str = ""


@dataclass
class Ratio:
    name: str
    value: float | None  # None: a peer was skipped
    target: str  # "<= 1.15", ">= 3"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "SKIP"
        op, num = self.target.split()
        ok = self.value <= float(num) if op == "<=" else (
            self.value >= float(num) if op == ">=" else self.value < float(num))
        return "PASS" if ok else "MISS"


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def row(self, section: str, tool_: str, op: str, seconds: float, *, nbytes: int = 0,
            files: int = 0, note: str = "") -> Row:
        if nbytes:
            amount, rate = human(nbytes), f"{nbytes / 1e6 / seconds:.0f} MB/s"
        elif files:
            amount, rate = f"{files} files", f"{files / seconds:.0f} files/s"
        else:
            amount = rate = ""
        r = Row(section, tool_, op, seconds, amount, rate, note)
        self.rows.append(r)
        print(f"  {section:<14} {tool_:<10} {op:<28} {seconds:8.3f} s  {rate} {note}",
              file=sys.stderr, flush=True)
        return r

    def fail(self, workload: str, reason: str) -> None:
        msg = f"FAILED {workload}: {reason}"
        self.failures.append(msg)
        print(msg, flush=True)

    def skip(self, peer: str, reason: str) -> None:
        msg = f"SKIPPED {peer}: {reason}"
        self.skipped.append(msg)
        print(msg, flush=True)

    def print(self) -> None:
        print(f"\n{self.title}\n")
        h = (f"{'workload':<14} {'tool':<10} {'operation':<30} {'seconds':>9} {'amount':>11} "
             f"{'rate':>14}  note")
        print(h)
        print("-" * len(h))
        last = None
        for r in self.rows:
            sec = r.section if r.section != last else ""
            last = r.section
            print(f"{sec:<14} {r.tool:<10} {r.operation:<30} {r.seconds:>9.3f} {r.amount:>11} "
                  f"{r.rate:>14}  {r.note}")
        print(f"\n{'ratio':<58} {'value':>7} {'target':>9}  result")
        for q in self.ratios:
            v = "-" if q.value is None else f"{q.value:.2f}"
            print(f"{q.name:<58} {v:>7} {q.target:>9}  {q.verdict}"
                  + (f"  ({q.note})" if q.note else ""))
        for s in self.skipped:
            print(s)
        for s in self.failures:
            print(s)
        if self.notes:
            print()
            for n in self.notes:
                print(textwrap.fill(n, 100, subsequent_indent="  "))


# ---------------------------------------------------------------- environment
