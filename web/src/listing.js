// A folder link's listing (docs/format.md 7.8), read strictly: anything off the
// spec is a format error before any of it is used.

import { int, isObject, parseStrict } from "./json.js";
import { nameOk } from "./manifest.js";
import { authError, formatError, strictUtf8 } from "./util.js";

export const MAX_LISTING = 32 * 2 ** 20;
const MAX_ITEMS = 10000;
const ID = /^[0-9a-f]{32}$/;
const FILE_KEYS = ["envelope", "mtime_ns", "node", "payload", "size", "type", "version"];
const EMPTY_FILE_KEYS = ["mtime_ns", "node", "size", "type", "version"];
const TOP_KEYS = ["entries", "format", "link", "made_ns"];
const utf8len = (s) => new TextEncoder().encode(s).length;

const exactly = (obj, keys) => Object.keys(obj).length === keys.length && keys.every((k) => k in obj);

function url(v) {
  if (typeof v !== "string" || v.length < 1 || v.length > 4096 || !/^https?:\/\//.test(v)) throw formatError("a listed URL is damaged");
  return v;
}

function pathOk(path) {
  if (typeof path !== "string" || utf8len(path) > 4096) return false;
  const names = path.split("/");
  return names.length <= 64 && names.every(nameOk);
}

// Plaintext -> {link, madeNs, entries: Map(path -> null (a folder) | {node, version, size, mtimeNs, envelope, payload})}.
export function parseListing(plaintext, linkId, version) {
  if (plaintext.length > MAX_LISTING) throw formatError("listing above 32 MiB");
  if (version < 1n || version >= 2n ** 63n) throw formatError("listing version out of range");
  let text;
  try {
    text = strictUtf8.decode(plaintext);
  } catch {
    throw formatError("listing is not UTF-8");
  }
  const m = parseStrict(text, 3); // listing, entries, item
  if (!isObject(m) || m.format !== "csfs-folder-1") throw formatError("not a csfs-folder-1 listing");
  if (!exactly(m, TOP_KEYS)) throw formatError("the listing has missing or unknown keys");
  const madeNs = int(m.made_ns, 0n, 2n ** 63n - 1n, "made_ns");
  if (typeof m.link !== "string") throw formatError("the listing's link is not a string");
  if (!isObject(m.entries)) throw formatError("the listing's entries are not an object");
  const paths = Object.keys(m.entries);
  if (paths.length > MAX_ITEMS) throw formatError("more than 10,000 listed items");
  const entries = new Map();
  const nodes = new Set();
  for (const path of paths) {
    if (!pathOk(path)) throw formatError("a listed path is damaged");
    const item = m.entries[path];
    if (!isObject(item) || (item.type !== "d" && item.type !== "f")) throw formatError("a listed item of unknown type");
    if (item.type === "d") {
      if (!exactly(item, ["type"])) throw formatError("a listed folder with other keys");
      entries.set(path, null);
      continue;
    }
    const ver = int(item.version, 0n, 2n ** 63n - 1n, "a listed version");
    if (!exactly(item, ver ? FILE_KEYS : EMPTY_FILE_KEYS)) throw formatError("a listed file with missing or unknown keys");
    const size = int(item.size, 0n, 2n ** 48n, "a listed size");
    if (!ver && size) throw formatError("an empty listed file with a size");
    const mtimeNs = int(item.mtime_ns, -(2n ** 63n), 2n ** 63n - 1n, "a listed mtime_ns");
    if (typeof item.node !== "string" || !ID.test(item.node)) throw formatError("a listed node id is damaged");
    if (nodes.has(item.node)) throw formatError("a file listed twice");
    nodes.add(item.node);
    entries.set(path, {
      node: item.node,
      version: ver,
      size: Number(size),
      mtimeNs,
      envelope: ver ? url(item.envelope) : "",
      payload: ver ? url(item.payload) : "",
    });
  }
  for (const path of entries.keys()) {
    const cut = path.lastIndexOf("/");
    if (cut >= 0 && entries.get(path.slice(0, cut)) !== null) throw formatError("a listed item whose folder is not listed");
  }
  if (m.link !== linkId) throw authError("the listing belongs to another link");
  return { link: m.link, madeNs, entries };
}

// The items directly in folder `dir` ("" for the top): [{name, path, item}], folders first.
export function children(listing, dir) {
  const out = [];
  for (const [path, item] of listing.entries) {
    const cut = path.lastIndexOf("/");
    if ((cut < 0 ? "" : path.slice(0, cut)) === dir) out.push({ name: path.slice(cut + 1), path, item });
  }
  return out.sort((a, b) => (a.item === null) !== (b.item === null) ? (a.item === null ? -1 : 1) : a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}
