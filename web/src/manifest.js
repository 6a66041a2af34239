// Directory manifests (docs/format.md 5.3), read strictly.

import { int, isObject, parseStrict } from "./json.js";
import { authError, formatError, strictUtf8 } from "./util.js";

export const MAX_MANIFEST = 32 * 2 ** 20;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const UID_MAX = 4294967294n;
const ID = /^[0-9a-f]{32}$/;
const ENTRY_KEYS = {
  f: ["id", "type", "mode", "mtime_ns", "size", "version"],
  d: ["id", "type", "mode", "mtime_ns"],
  l: ["id", "type", "mode", "mtime_ns", "target"],
  p: ["id", "type", "mode", "mtime_ns"],
  s: ["id", "type", "mode", "mtime_ns"],
  c: ["id", "type", "mode", "mtime_ns", "rdev"],
  b: ["id", "type", "mode", "mtime_ns", "rdev"],
};
const ENTRY_OPTIONAL = ["uid", "gid", "atime_ns", "ctime_ns", "xattrs"];
const MANIFEST_KEYS = ["format", "dir_id", "mode", "mtime_ns", "readers", "writers", "entries"];
const MANIFEST_OPTIONAL = ["ctime_ns", "atime_ns", "uid", "gid", "removed"];
const utf8len = (s) => new TextEncoder().encode(s).length;

function keysExactly(obj, required, optional, what) {
  const keys = Object.keys(obj);
  if (!required.every((k) => k in obj) || !keys.every((k) => required.includes(k) || optional.includes(k))) {
    throw formatError(`${what} has missing or unknown keys`);
  }
}

export function nameOk(name) {
  if (typeof name !== "string" || !name.isWellFormed()) return false;
  const n = utf8len(name);
  return n > 0 && n <= 255 && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}

function checkXattrs(x) {
  if (!isObject(x) || Object.keys(x).length === 0) throw formatError("xattrs must be a non-empty object");
  let total = 0;
  for (const [name, text] of Object.entries(x)) {
    const n = utf8len(name);
    if (!name.startsWith("user.") || n === 5 || n > 255 || name.includes("\0")) throw formatError("bad xattr name");
    let value;
    try {
      if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) throw new Error();
      value = atob(text);
    } catch {
      throw formatError("xattr value is not base64");
    }
    if (btoa(value) !== text || value.length > 65536) throw formatError("xattr value not canonical or too long");
    total += n + value.length;
  }
  if (total > 65536) throw formatError("xattrs over 65536 bytes");
}

function checkEntry(name, e) {
  if (!nameOk(name)) throw formatError("bad name");
  if (!isObject(e) || !(e.type in ENTRY_KEYS)) throw formatError("entry type");
  keysExactly(e, ENTRY_KEYS[e.type], ENTRY_OPTIONAL, "an entry");
  if (typeof e.id !== "string" || !ID.test(e.id)) throw formatError("entry id");
  int(e.mode, 0n, 0o7777n, "mode");
  int(e.mtime_ns, I64_MIN, I64_MAX, "mtime_ns");
  for (const k of ["uid", "gid"]) if (k in e) int(e[k], 0n, UID_MAX, k);
  for (const k of ["atime_ns", "ctime_ns"]) if (k in e) int(e[k], 0n, I64_MAX, k);
  if ("rdev" in e) int(e.rdev, 0n, 2n ** 32n - 1n, "rdev");
  if ("xattrs" in e) checkXattrs(e.xattrs);
  if (e.type === "f") {
    const size = int(e.size, 0n, 2n ** 48n, "size");
    const ver = int(e.version, 0n, I64_MAX, "version");
    if (ver === 0n && size !== 0n) throw formatError("an empty file with a size");
  }
  if (e.type === "l") {
    const t = e.target;
    if (typeof t !== "string" || !t || t.includes("\0") || !t.isWellFormed() || utf8len(t) > 4095) {
      throw formatError("symlink target");
    }
  }
}

// Plaintext bytes -> the manifest (5.3), with every rule checked before use.
export function parseManifest(plaintext, dirId, version) {
  if (plaintext.length > MAX_MANIFEST) throw formatError("manifest above 32 MiB");
  if (version < 1n || version >= 2n ** 63n) throw formatError("manifest version out of range");
  let text;
  try {
    text = strictUtf8.decode(plaintext);
  } catch {
    throw formatError("manifest is not UTF-8");
  }
  // A valid manifest nests 4 deep (manifest, entries, entry, xattrs).
  const m = parseStrict(text, 4);
  if (!isObject(m) || m.format !== "csfs-dir-1") throw formatError("not a csfs-dir-1 manifest");
  keysExactly(m, MANIFEST_KEYS, MANIFEST_OPTIONAL, "the manifest");
  for (const k of ["uid", "gid"]) if (k in m) int(m[k], 0n, UID_MAX, k);
  for (const k of ["ctime_ns", "atime_ns"]) if (k in m) int(m[k], 0n, I64_MAX, k);
  int(m.mode, 0n, 0o7777n, "mode");
  int(m.mtime_ns, I64_MIN, I64_MAX, "mtime_ns");
  if (typeof m.dir_id !== "string" || !ID.test(m.dir_id)) throw formatError("dir_id");
  if ("removed" in m) {
    // A folder a removal marked (5.3, 5.5): shown as it is.
    const r = m.removed;
    if (!isObject(r)) throw formatError("removed is not an object");
    keysExactly(r, ["name", "parent"], [], "removed");
    if (typeof r.parent !== "string" || !ID.test(r.parent) || !nameOk(r.name)) throw formatError("removed");
  }
  if (!Array.isArray(m.readers) || m.readers.length < 1 || m.readers.length > 1024) throw formatError("readers");
  if (!m.readers.every((r) => typeof r === "string" && r.length >= 1 && r.length <= 16384)) throw formatError("reader");
  if (!Array.isArray(m.writers) || m.writers.length !== 0) throw formatError("writers is reserved and must be []");
  if (!isObject(m.entries)) throw formatError("entries");
  const names = Object.keys(m.entries);
  if (names.length > 100000) throw formatError("more than 100,000 entries");
  for (const name of names) checkEntry(name, m.entries[name]);
  if (m.dir_id !== dirId) throw authError("the manifest belongs to another directory");
  return m;
}
