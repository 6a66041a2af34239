"""An rmdir never orphans a file another client put in the folder meanwhile.

A folder is two objects (its entry in the parent, its own manifest), and no store
switches two objects at once. So rmdir first marks the folder's manifest removed
(conditional on the empty version it read), then drops the entry from the parent,
then reads the folder again; a writer that adds a name to a removed folder un-marks
it and puts it back in its parent (docs/format.md 5.3, 5.5). Whichever side acts
last sees the other, so the file stays reachable in every interleaving; before, the
file sat in a manifest nothing listed, and `fsck --repair` deleted it.

The interleavings are forced at the rmdir's steps (a hook on its crash points: a
fault that cannot be timed otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from csfs.errors import DirectoryNotEmpty
from csfs.vault import Vault
from csfs.vault import namespace as namespace_module
from csfs.vault.fsck import fsck
from tests.vault.conftest import read_bytes, write_bytes


@pytest.fixture
def at_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, Callable[[], None]], None]]:
    """Run an action when the rmdir reaches a named step; the test checks it ran."""
    actions: dict[str, Callable[[], None]] = {}
    ran: list[str] = []

    def hook(name: str) -> None:
        action = actions.pop(name, None)
        if action is not None:
            ran.append(name)
            action()

    monkeypatch.setattr(namespace_module, "crash_point", hook)

    def register(name: str, action: Callable[[], None]) -> None:
        actions[name] = action

    yield register
    assert not actions, f"the rmdir never reached step(s) {sorted(actions)}"


def test_rmdir_with_a_stale_view_refuses_a_folder_another_client_filled(
    vault: Vault, reopen: Callable[..., Vault]
) -> None:
    vault.mkdir("/sub")
    a = reopen(ttl=3600)
    assert a.listdir("/sub") == {}  # A's cached view: empty
    write_bytes(reopen(), "/sub/f", b"from B")
    with pytest.raises(DirectoryNotEmpty):
        a.remove("/sub", expect_dir=True)
    assert read_bytes(reopen(), "/sub/f") == b"from B"


@pytest.mark.parametrize("step", ["rmdir-marked", "rmdir-unlisted"])
def test_a_file_written_during_the_rmdir_stays_reachable(
    vault: Vault, reopen: Callable[..., Vault], at_step: Callable[..., None], step: str
) -> None:
    vault.mkdir("/sub")
    b = reopen(ttl=3600)
    assert b.listdir("/sub") == {}  # B knows the folder (empty), as a mount would
    at_step(step, lambda: write_bytes(b, "/sub/f", b"from B"))
    reopen().remove("/sub", expect_dir=True)
    check = reopen()
    assert read_bytes(check, "/sub/f") == b"from B"
    assert list(check.listdir("/")) == ["sub"]
    report = fsck(check, repair=True, grace=0)
    assert report.ok, report.problems
    assert read_bytes(reopen(), "/sub/f") == b"from B"


def test_rmdir_of_an_empty_folder_still_removes_it(
    vault: Vault, reopen: Callable[..., Vault]
) -> None:
    vault.mkdir("/sub")
    vault.mkdir("/sub2")
    reopen().remove("/sub", expect_dir=True)
    assert list(reopen().listdir("/")) == ["sub2"]
    report = fsck(reopen(), repair=True, grace=0)
    assert report.ok, report.problems


def test_rename_over_a_folder_another_client_filled_keeps_its_file(
    vault: Vault, reopen: Callable[..., Vault]
) -> None:
    vault.mkdir("/target")
    vault.mkdir("/moving")
    a = reopen(ttl=3600)
    assert a.listdir("/target") == {}  # A's cached view: empty, so replaceable
    write_bytes(reopen(), "/target/f", b"from B")
    with pytest.raises(DirectoryNotEmpty):
        a.rename("/moving", "/target")
    assert read_bytes(reopen(), "/target/f") == b"from B"


def test_rename_over_a_folder_filled_during_the_switch_puts_it_back(
    vault: Vault, reopen: Callable[..., Vault], monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.mkdir("/target")
    vault.mkdir("/moving")
    b = reopen(ttl=3600)
    assert b.listdir("/target") == {}
    a = reopen()
    mark = a._mark_removed

    def mark_then_b_writes(*args: object) -> None:
        mark(*args)  # type: ignore[arg-type]
        write_bytes(b, "/target/f", b"from B")  # B's stale view still has /target

    monkeypatch.setattr(a, "_mark_removed", mark_then_b_writes)
    a.rename("/moving", "/target")
    check = reopen()
    names = sorted(check.listdir("/"))
    assert names[0] == "target" and names[1].startswith("target (conflict "), names
    assert read_bytes(check, f"/{names[1]}/f") == b"from B"


def test_fsck_keeps_a_folder_with_files_that_nothing_lists(
    vault: Vault, reopen: Callable[..., Vault]
) -> None:
    """A crash between a writer's switch and its check (5.5) can still leave one."""
    vault.mkdir("/sub")
    write_bytes(vault, "/sub/f", b"keep me")
    sub = vault.lookup("/sub")

    def unlist(m: object) -> None:
        del m.entries["sub"]  # type: ignore[attr-defined]

    vault.update_dir(vault.root_id, unlist)
    report = fsck(reopen(), repair=True, grace=0)
    assert not report.ok
    assert any(sub.id in p and "1 entr" in p for p in report.problems), report.problems
    f = vault.load_dir(sub.id, fresh=True)[0].entries["f"]
    assert read_bytes_entry(reopen(), f) == b"keep me"


def read_bytes_entry(v: Vault, entry: object) -> bytes:
    import io

    buf = io.BytesIO()
    v.read_file(entry, buf)  # type: ignore[arg-type]
    return buf.getvalue()


def test_fsck_still_collects_a_tree_removed_recursively(
    vault: Vault, reopen: Callable[..., Vault]
) -> None:
    vault.mkdir("/tree/inner", parents=True)
    write_bytes(vault, "/tree/inner/f", b"x")
    write_bytes(vault, "/tree/g", b"y")
    reopen().remove("/tree", recursive=True)
    assert reopen().listdir("/") == {}
    report = fsck(reopen(), repair=True, grace=0)
    assert report.ok, report.problems
    assert report.deleted >= 6  # two manifests, two files' content and envelope
