"""The vault: nodes, directories, versions, over a Store, with crypto from csfs.crypto."""

from csfs.vault.manifest import DirectoryManifest, Entry
from csfs.vault.paths import split_path
from csfs.vault.vault import Vault

__all__ = ["DirectoryManifest", "Entry", "Vault", "split_path"]
