"""The tree a member other than the owner sees: ``/Shared/<owner>/<name>`` for
each share it was given (docs/format.md 7.4, 7.6), made of virtual, read-only
folders that name no store object."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from csfs.errors import CsfsError
from csfs.vault.core import VaultCore
from csfs.vault.manifest import DirectoryManifest, Entry


class SharedView(VaultCore):
    """Builds the member's virtual ``Shared/<owner>/`` folders from its notices.

    Never writes: the virtual folders are read-only and have no store objects.
    """

    @property
    def shared_view(self) -> bool:
        """Members other than the owner see only ``Shared/<owner>/<name>``."""
        return not self.is_owner and (self.access.joined or bool(self.access.notices))

    @property
    def root_id(self) -> str:
        return _virtual_id("/") if self.shared_view else self.header.root_id

    def _build_virtual(self) -> dict[str, DirectoryManifest]:
        owner = self.access.owner_name()
        top, shared, mine = (
            _virtual_id("/"),
            _virtual_id("/Shared"),
            _virtual_id("/Shared/" + owner),
        )
        ro = 0o555
        entries: dict[str, Entry] = {}
        # The name chosen when the share was first applied (AccessLog._read_notice), so
        # that a later share never displaces an earlier one's path.
        notices = sorted(self.access.notices.values(), key=lambda n: (not n.shown, n.node))
        for notice in notices:
            name, n = notice.shown or notice.name, 2
            while name in entries:
                name, n = f"{notice.name} ({n})", n + 1
            if notice.type == "f":
                # A shared file: its entry comes from its pointer (format.md 7.6).
                try:
                    pointer = self.load_dir(notice.node)[0]
                except CsfsError:
                    continue  # shown once it can be read and verified
                found = [e for e in pointer.entries.values() if e.id == notice.node]
                if found:
                    entries[name] = replace(found[0], mode=found[0].mode & ~0o222)
                continue
            entries[name] = Entry(notice.node, "d", mode=0o755 if notice.write else ro)
        return {
            top: DirectoryManifest(top, 1, {"Shared": Entry(shared, "d", mode=ro)}, mode=ro),
            shared: DirectoryManifest(shared, 1, {owner: Entry(mine, "d", mode=ro)}, mode=ro),
            mine: DirectoryManifest(mine, 1, entries, mode=ro),
        }


def _virtual_id(path: str) -> str:
    """A stable id for a folder of the Shared view; it never names a store object."""
    return hashlib.sha256(b"csfs v1 virtual\0" + path.encode()).hexdigest()[:32]
