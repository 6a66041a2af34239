"""Two mounts of one vault write, save over (editor style) and move shared names at
once; afterwards every acknowledged version is accounted for.

Each version's content starts with a line naming it and the version it was made
from (what its writer read). A version is accounted for if it is some file's final
content (under its name or as a conflict copy), if a later acknowledged version was
made from it, or if an acknowledged rename replaced it after its writer had read it
there. Anything else is a silent loss. Names that only one client touches must end
with that client's last acknowledged version (no revert).

It runs twice: straight to moto's server, and through the fault proxy
(tests/faultproxy.py) while a chaos thread injects 503s, connection resets, dropped
replies (the store did the work, the client never hears), slow answers and short
outages (past the mounts' TTL, so they go offline and queue).

Short by default (about 20 s each); `CSFS_SOAK=1` runs each for CSFS_SOAK_SECONDS
(default 240). Run with -s to see the counts.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.faultproxy import FaultProxy
from tests.fuse.helpers import Mount, Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]

SHARED = [f"doc{i}" for i in range(4)]
DIRS = ["", "sub"]


@dataclass
class Book:
    acked: dict[str, str | None] = field(default_factory=dict)  # tag -> parent tag
    replaced_seen: set[str] = field(default_factory=set)
    own_last: dict[str, str] = field(default_factory=dict)  # own name -> last tag
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    history: list[str] = field(default_factory=list)  # what each step did, for a failure
    lock: threading.Lock = field(default_factory=threading.Lock)


def head(path: str) -> str | None:
    with open(path, "rb") as f:
        return tag_of(f.readline())


def tag_of(first_line: bytes) -> str | None:
    line = first_line.decode(errors="replace").strip()
    return line.split(" ")[0] if line.startswith("v:") else None


def content(tag: str, parent: str | None, rnd: random.Random) -> bytes:
    return f"{tag} parent={parent}\n".encode() + rnd.randbytes(rnd.choice([0, 10, 3000, 70000]))


def client(m: Mount, who: str, seconds: float, book: Book, seed: int) -> None:
    rnd = random.Random(seed)
    n = 0
    end = time.monotonic() + seconds
    own = [f"{who}-own{i}" for i in range(2)]
    while time.monotonic() < end:
        n += 1
        tag = f"v:{who}:{n}"
        op = rnd.random()
        step = ""
        d = rnd.choice(DIRS)
        name = rnd.choice(SHARED)
        path = m.p(d, name)
        try:
            if op < 0.4:  # editor save: read, write a temp file, rename it over
                book.ops["save"] += 1
                step = "save:read"
                parent = head(path) if os.path.exists(path) else None
                tmp = m.p(d, f".{name}.{who}.tmp")
                if os.path.exists(tmp):
                    # Left by a rename that failed: this client overwrites it knowingly.
                    with book.lock:
                        book.replaced_seen.add(head(tmp) or "")
                step = "save:write"
                with open(tmp, "wb") as f:
                    f.write(content(tag, parent, rnd))
                    f.flush()
                    step = "save:close"
                with book.lock:
                    book.acked[tag] = parent
                step = "save:rename"
                seen = head(path) if os.path.exists(path) else None
                os.rename(tmp, path)
                if seen:
                    with book.lock:
                        book.replaced_seen.add(seen)
            elif op < 0.65:  # rewrite in place
                book.ops["rewrite"] += 1
                step = "rewrite:read"
                with open(path, "r+b") as f:
                    # Through this handle: a second open by path may find another node
                    # there by now (another client's rename), not the one written here.
                    parent = tag_of(f.readline())
                    step = "rewrite:write"
                    f.seek(0)
                    f.truncate(0)
                    f.write(content(tag, parent, rnd))
                    f.flush()
                    step = "rewrite:close"
                with book.lock:
                    book.acked[tag] = parent
            elif op < 0.8:  # move to the other folder, if the name is free there
                book.ops["move"] += 1
                other = m.p("sub" if d == "" else "", name)
                step = "move"
                if os.path.exists(path) and not os.path.exists(other):
                    os.rename(path, other)
            else:  # a name only this client touches, rewritten and moved
                book.ops["own"] += 1
                mine = rnd.choice(own)
                step = "own:read"
                here = [p for p in (m.p(mine), m.p("sub", mine)) if os.path.exists(p)]
                if here and rnd.random() < 0.3:
                    dst = m.p("sub", mine) if here[0] == m.p(mine) else m.p(mine)
                    step = "own:rename"
                    os.rename(here[0], dst)
                else:
                    target = here[0] if here else m.p(rnd.choice(DIRS), mine)
                    parent = head(target) if here else None
                    step = "own:write"
                    with open(target, "wb") as f:
                        f.write(content(tag, parent, rnd))
                        f.flush()
                        step = "own:close"
                    with book.lock:
                        book.acked[tag] = parent
                        book.own_last[mine] = tag
            book.history.append(f"{time.time():.3f} {tag} {step} {d}/{name}")
        except OSError as exc:
            book.history.append(f"{time.time():.3f} {tag} {step} {d}/{name} failed: {exc.strerror}")
            # Which step failed: a read may fail while the store is down and the data is
            # not cached, but a write or a close() must not (the durability promise).
            book.errors[f"{step}:{errno.errorcode.get(exc.errno or 0, str(exc.errno))}"] += 1


def soak_seconds() -> float:
    if os.environ.get("CSFS_SOAK") == "1":
        return float(os.environ.get("CSFS_SOAK_SECONDS", "240"))
    return 20.0


def chaos(proxy: FaultProxy, stop: threading.Event, seed: int) -> Counter[str]:
    """Inject a random fault every 0.2-1.5 s until ``stop``; returns what was injected."""
    rnd = random.Random(seed)
    kinds: Counter[str] = Counter()
    while not stop.wait(rnd.uniform(0.2, 1.5)):
        kind = rnd.choices(["errors", "resets", "drops", "slow", "outage"], [4, 4, 2, 1, 1])[0]
        kinds[kind] += 1
        if kind == "outage":
            proxy.outage(rnd.uniform(1, 4))
            stop.wait(4)
        elif kind == "slow":
            proxy.slow(0.3)
            stop.wait(2)
            proxy.slow(0)
        else:
            getattr(proxy, kind)(rnd.randint(1, 3))
    proxy.restore()
    return kinds


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "faults"])
def test_two_mounts_soak(make_vault: Callable[[str], Vault], faults: bool,
                         request: pytest.FixtureRequest) -> None:
    moto_vault = make_vault("moto")
    proxy: FaultProxy | None = request.getfixturevalue("fault_proxy") if faults else None
    if proxy is not None:
        moto_vault.env["AWS_ENDPOINT_URL"] = proxy.endpoint_url
    a = moto_vault.mount("a", ttl=1)
    os.mkdir(a.p("sub"))
    for name in SHARED:
        with open(a.p(name), "wb") as f:
            f.write(b"v:init:" + name.encode() + b" parent=None\n")
    a.sync()
    b = moto_vault.mount("b", ttl=2)
    books = {"A": Book(), "B": Book()}
    seconds = soak_seconds()
    threads = [
        threading.Thread(target=client, args=(m, who, seconds, books[who], seed))
        for who, m, seed in (("A", a, 1), ("B", b, 2))
    ]
    stop = threading.Event()
    injected: list[Counter[str]] = []
    if proxy is not None:
        threads.append(threading.Thread(target=lambda: injected.append(chaos(proxy, stop, 3))))
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    stop.set()
    for t in threads[2:]:
        t.join()
    a.sync(timeout=300)
    b.sync(timeout=300)
    if proxy is not None:
        moto_vault.env["AWS_ENDPOINT_URL"] = moto_vault.moto.endpoint_url
    fresh = moto_vault.mount("check", ttl=1)
    present: dict[str, str] = {}
    conflict_copies = 0
    for d in DIRS:
        for name in os.listdir(fresh.p(d)):
            p = fresh.p(d, name)
            if os.path.isdir(p):
                continue
            conflict_copies += "(conflict" in name
            tag = head(p)
            if tag:
                present[tag] = os.path.join(d, name)
    acked: dict[str, str | None] = {}
    replaced_seen: set[str] = set()
    for book in books.values():
        acked.update(book.acked)
        replaced_seen |= book.replaced_seen
    parents = {p for p in acked.values() if p}
    lost = sorted(t for t in acked if t not in present and t not in parents
                  and t not in replaced_seen)
    reverted = []
    for who, book in books.items():
        for mine, tag in book.own_last.items():
            where = [present.get(tag)]
            if where == [None] or os.path.basename(where[0] or "") != mine:
                reverted.append((who, mine, tag))
    ops = sum((b.ops for b in books.values()), Counter())
    errors = sum((b.errors for b in books.values()), Counter())
    fault_note = ""
    if proxy is not None:
        fault_note = (f"faults injected {proxy.counts['faults']} of {proxy.counts['requests']} "
                      f"requests ({dict(injected[0])}), ")
    print(f"\nsoak {seconds:.0f}s: operations {sum(ops.values())} {dict(ops)}, {fault_note}"
          f"acknowledged versions {len(acked)}, present {len(present)}, "
          f"conflict copies {conflict_copies}, lost {len(lost)}, reverted {len(reverted)}, "
          f"errors {dict(errors)}")
    if lost:  # what happened around each lost version, for the one who debugs it
        for book in books.values():
            for i, line in enumerate(book.history):
                if any(f" {t} " in line for t in lost):
                    print("\n".join(book.history[max(0, i - 3):i + 6]))
    assert not lost, lost[:20]
    failed_closes = {k: v for k, v in errors.items() if k.split(":")[1] in ("write", "close")}
    assert not failed_closes, failed_closes
    assert not reverted, reverted
    assert len(acked) > 20  # it did run
