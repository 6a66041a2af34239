// The share-link page (docs/format.md 7.7, 7.8): one file, read with the key in
// the URL fragment (never sent to a server) through two presigned GET URLs; or a
// folder, whose listing (one more presigned URL) names each file's two URLs. A
// link holder cannot read the access log, so only the owner's signature counts.

import { contextBytes, decryptPayload, MAX_ENVELOPE, MAX_MAP, openEnvelope, padme, chunkCount } from "./decoder.js";
import { int, isObject, parseStrict } from "./json.js";
import { linkIdentity } from "./keys.js";
import { children, MAX_LISTING, parseListing } from "./listing.js";
import { openLaidOutBytes } from "./log.js";
import { nameOk } from "./manifest.js";
import { rangeReader, readBounded } from "./s3.js";
import { blobSink, coalesced, opfsSink, pickerSink, saveMode } from "./sinks.js";
import { authError, CsfsError, formatError, fromHex, readU32, readU64, strictUtf8 } from "./util.js";

const $ = (id) => document.getElementById(id);
const KEYS = ["envelope", "expires", "format", "key", "name", "node", "owner", "payload", "size", "vault_id", "version"];
const FOLDER_KEYS = ["expires", "format", "key", "link", "listing", "name", "owner", "vault_id"];
const ID = /^[0-9a-f]{32}$/;
const HEX32 = /^[0-9a-f]{64}$/;
const PREVIEW_MAX = 1 << 20;
const maxpay = (m) => 32 + padme(m) + 16 * chunkCount(padme(m), 4096); // 5
const MAX_LISTING_OBJECT = 4 + MAX_ENVELOPE + maxpay(MAX_LISTING); // 5: l/<link_id>
const linkError = (m) => new CsfsError("link", m);
const exactly = (obj, keys) => Object.keys(obj).length === keys.length && keys.every((k) => k in obj);

// 7.7: the fragment, every field checked before use.
export function parseLink(hash) {
  let link;
  try {
    const b64 = hash.replace(/^#/, "").replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    link = parseStrict(strictUtf8.decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))), 1);
  } catch {
    throw formatError("this link is damaged or incomplete");
  }
  if (isObject(link) && link.format === "csfs-folder-link-1") return parseFolderLink(link);
  if (!isObject(link) || link.format !== "csfs-link-1") throw formatError("this is not a csfs link");
  if (!exactly(link, KEYS)) throw formatError("this link is damaged or incomplete");
  for (const k of ["envelope", "payload"]) {
    if (typeof link[k] !== "string" || !/^https?:\/\//.test(link[k])) throw formatError("this link's addresses are damaged");
  }
  if (![link.key, link.owner].every((x) => typeof x === "string" && HEX32.test(x))) throw formatError("this link's keys are damaged");
  if (![link.node, link.vault_id].every((x) => typeof x === "string" && ID.test(x))) throw formatError("this link's ids are damaged");
  if (!nameOk(link.name)) throw formatError("this link's file name is damaged");
  return {
    ...link,
    expires: Number(int(link.expires, 0n, 2n ** 53n, "expires")),
    size: Number(int(link.size, 0n, 2n ** 48n, "size")),
    version: int(link.version, 1n, 2n ** 63n - 1n, "version"),
    key: fromHex(link.key),
    owner: fromHex(link.owner),
  };
}

// 7.8: a folder link's fragment, every field checked before use.
function parseFolderLink(link) {
  if (!exactly(link, FOLDER_KEYS)) throw formatError("this link is damaged or incomplete");
  if (typeof link.listing !== "string" || !/^https?:\/\//.test(link.listing)) throw formatError("this link's addresses are damaged");
  if (![link.key, link.owner].every((x) => typeof x === "string" && HEX32.test(x))) throw formatError("this link's keys are damaged");
  if (![link.link, link.vault_id].every((x) => typeof x === "string" && ID.test(x))) throw formatError("this link's ids are damaged");
  if (!nameOk(link.name)) throw formatError("this link's folder name is damaged");
  return {
    ...link,
    folder: true,
    expires: Number(int(link.expires, 0n, 2n ** 53n, "expires")),
    key: fromHex(link.key),
    owner: fromHex(link.owner),
  };
}

const expired = (link) => Date.now() >= link.expires * 1000;
const EXPIRED = "this link has expired; ask for a new link";

// Whether the link has expired by this device's clock or, when that is slow,
// by the clock of the server that sent this page (its Date header; same-origin,
// so readable). Asked when the store refuses: a store that enforces expiry may
// answer without CORS headers (Ceph RGW does), which the page sees only as a
// failed fetch, not as "expired".
async function expiredNow(link) {
  if (expired(link)) return true;
  try {
    const res = await fetch(location.pathname, { method: "HEAD", cache: "no-store" });
    return Date.parse(res.headers.get("Date") ?? "") >= link.expires * 1000;
  } catch {
    return false;
  }
}

// A presigned URL's answer -> the message a person can act on.
async function refused(res, link) {
  const text = await res.text().catch(() => "");
  const what = link.folder ? "folder" : "file";
  if (res.status === 404 || /NoSuchKey/.test(text)) return linkError(`this link was ended by its owner (or its ${what} is gone); ask for a new link`);
  if (/expired/i.test(text) || (await expiredNow(link))) return linkError(EXPIRED);
  const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP ${res.status}`;
  return new CsfsError("store", `the store refused this link (${code})`);
}

async function get(url, link, headers) {
  let res;
  try {
    res = await fetch(url, { headers, cache: "no-store", referrerPolicy: "no-referrer" });
  } catch {
    if (await expiredNow(link)) throw linkError(EXPIRED);
    throw new CsfsError("store", "cannot reach the store that holds this file");
  }
  if (!res.ok) throw await refused(res, link);
  return res;
}

// A byte source over one presigned URL ({size, read}), size from Content-Range.
async function urlSource(url, max, link) {
  const res = await get(url, link, { Range: "bytes=0-31" });
  const m = /\/(\d+)$/.exec(res.headers.get("Content-Range") ?? "");
  await res.body?.cancel();
  if (!m) throw new CsfsError("store", "the store hides Content-Range from this page (its CORS rule)");
  const size = Number(m[1]);
  if (size > max) throw formatError("the file's payload is larger than any valid one");
  const read = async (start, end) => {
    if (end <= start) return new Uint8Array(0);
    return readBounded(await get(url, link, { Range: `bytes=${start}-${end - 1}` }), end - start);
  };
  const open = async (start, end) => rangeReader(await get(url, link, { Range: `bytes=${start}-${end - 1}` }), end - start);
  return { size, read, open };
}

// 7.7 "Reading a link": the version opened, checked against the fragment.
async function openLink(link) {
  if (expired(link)) throw linkError(EXPIRED);
  const envelope = await readBounded(await get(link.envelope, link, { Range: `bytes=0-${MAX_ENVELOPE}` }), MAX_ENVELOPE + 1);
  if (envelope.length > MAX_ENVELOPE) throw formatError("the key envelope is larger than 2 MiB");
  const src = await urlSource(link.payload, maxpay(link.size) + MAX_MAP, link);
  const opened = await openEnvelope({
    envelope,
    payloadStart: await src.read(0, 32),
    identity: await linkIdentity(link.key),
    expected: contextBytes(2, link.vault_id, link.node, link.version),
    signers: [link.owner],
  });
  if (opened.L !== link.size) throw authError("the file's sealed length differs from the link's");
  return { opened, src };
}

function sentence(e) {
  if (e instanceof CsfsError) {
    const m = e.message.replace(/\.$/, "");
    if (e.kind === "authentication") return `Refused: ${m}; the data was changed or is not from the vault's owner, and nothing was shown or saved.`;
    if (e.kind === "format") return `Refused: ${m}; nothing was shown or saved.`;
    if (e.kind === "no match") return "Refused: this link's key does not open the file; nothing was shown or saved.";
    return m.charAt(0).toUpperCase() + m.slice(1) + ".";
  }
  return `Unexpected failure: ${e.message}.`;
}

function fail(e) {
  $("error").textContent = sentence(e);
  $("error").hidden = false;
  $("save").disabled = true;
  $("preview").hidden = true;
  $("status").textContent = "";
  document.body.dataset.failed = "1";
  console.warn(e);
}

function humanSize(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u ? `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}` : `${n} B`;
}

let link = null; // the fragment
let current = null; // the file shown: the link's own, or one of a folder link's

// 7.8 "Reading one": the listing through its URL, opened with the link's key,
// signed by the owner, parsed strictly.
async function openListing(folder) {
  if (expired(folder)) throw linkError(EXPIRED);
  const obj = await readBounded(await get(folder.listing, folder, { Range: `bytes=0-${MAX_LISTING_OBJECT}` }), MAX_LISTING_OBJECT + 1);
  if (obj.length > MAX_LISTING_OBJECT) throw formatError("the folder's listing is larger than any valid one");
  if (obj.length < 4) throw formatError("the folder's listing is truncated");
  const envLen = readU32(obj, 0);
  const version = envLen >= 49 && obj.length >= 4 + 49 ? readU64(obj, 4 + 41) : 0n;
  if (version < 1n || version >= 2n ** 63n) throw formatError("the listing's version is out of range");
  const got = await openLaidOutBytes(obj, await linkIdentity(folder.key), contextBytes(6, folder.vault_id, folder.link, version),
    [folder.owner], { maxLength: MAX_LISTING, what: "the folder's listing" });
  if (!got) throw new CsfsError("no match", "this link's key does not open the folder's listing");
  return parseListing(got.plaintext, folder.link, version);
}

let listing = null;
let here = ""; // the folder shown, as a path below the linked one

function showFolder(dir) {
  here = dir;
  current = null;
  $("file").hidden = true;
  $("preview").hidden = true;
  $("folder").hidden = false;
  crumbs(dir, null);
  const list = $("listing");
  list.replaceChildren();
  const items = children(listing, dir);
  if (!items.length) list.append(Object.assign(document.createElement("li"), { className: "empty", textContent: "This folder is empty." }));
  for (const it of items) {
    const li = document.createElement("li");
    const b = Object.assign(document.createElement("button"), { type: "button" });
    b.dataset.name = it.name;
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: it.name });
    const meta = Object.assign(document.createElement("span"), { className: "meta" });
    if (it.item === null) {
      li.className = "dir";
      meta.textContent = "folder";
      b.addEventListener("click", () => showFolder(it.path));
    } else {
      li.className = "file";
      meta.textContent = humanSize(it.item.size);
      b.addEventListener("click", () => showFile(it).catch(fail));
    }
    b.append(name, meta);
    li.append(b);
    list.append(li);
  }
  $("status").textContent = `Verified: listed by the vault's owner (${listing.entries.size} items).`;
}

function crumbs(dir, file) {
  const nav = $("crumbs");
  nav.replaceChildren();
  const parts = dir ? dir.split("/") : [];
  const add = (label, path) => {
    if (nav.childElementCount) nav.append(Object.assign(document.createElement("span"), { textContent: "/" }));
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: label });
    b.addEventListener("click", () => {
      $("error").hidden = true;
      delete document.body.dataset.failed;
      showFolder(path);
    });
    nav.append(b);
  };
  add(link.name, "");
  parts.forEach((p, i) => add(p, parts.slice(0, i + 1).join("/")));
  if (file) nav.append(Object.assign(document.createElement("span"), { textContent: `/ ${file}` }));
}

// A file of a folder link, shown as a file link's: the same checks (7.7), its URLs.
async function showFile(it) {
  const f = it.item;
  current = {
    name: it.name, size: f.size, node: f.node, version: f.version, envelope: f.envelope, payload: f.payload,
    vault_id: link.vault_id, owner: link.owner, key: link.key, expires: link.expires, folder: true,
  };
  $("folder").hidden = true;
  crumbs(here, it.name);
  await showCurrent();
}

async function showCurrent() {
  const file = current;
  $("name").textContent = file.name;
  $("size").textContent = humanSize(current.size);
  $("expires").textContent = new Date(current.expires * 1000).toLocaleString();
  $("preview").hidden = true;
  $("save").disabled = true;
  $("file").hidden = false;
  if (!current.version) {
    // 7.8: an empty file has no objects; there is nothing to verify.
    $("save").disabled = false;
    $("status").textContent = "An empty file.";
    return;
  }
  $("status").textContent = "Verifying the file…";
  const { opened, src } = await openLink(file);
  if (current !== file) return; // the person went back meanwhile
  $("save").disabled = false;
  $("status").textContent = "Verified: signed by the vault's owner.";
  // A small file that is UTF-8 text is shown here; anything else is saved.
  if (file.size <= PREVIEW_MAX) {
    const parts = [];
    for await (const p of decryptPayload(opened, src)) parts.push(p.slice());
    const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
    if (current !== file) return;
    let text = null;
    try {
      text = strictUtf8.decode(bytes);
    } catch {
      // not text
    }
    if (text !== null && !/[\0-\x08\x0e-\x1f]/.test(text)) {
      $("preview").textContent = text;
      $("preview").hidden = false;
    }
    document.body.dataset.shown = JSON.stringify({ ms: performance.now(), bytes: bytes.length });
  }
}

async function main() {
  link = parseLink(location.hash);
  // The key leaves the address bar (and the history entry) once read.
  history.replaceState(null, "", location.pathname + location.search);
  if (link.folder) {
    document.title = "csfs shared folder";
    $("title").textContent = "Shared folder";
    $("status").textContent = "Verifying the folder's listing…";
    listing = await openListing(link);
    $("expires-folder").textContent = new Date(link.expires * 1000).toLocaleString();
    showFolder("");
    return;
  }
  current = link;
  await showCurrent();
}

$("save").addEventListener("click", () => {
  const usePicker = "showSaveFilePicker" in window && !saveMode;
  const file = current;
  const picked = usePicker ? window.showSaveFilePicker({ suggestedName: file.name }).catch(() => null) : null;
  $("save").disabled = true;
  (async () => {
    let sink;
    if (usePicker) {
      const handle = await picked;
      if (!handle) return ($("status").textContent = "Not saved.");
      sink = await pickerSink(handle);
    } else if (saveMode !== "blob" && navigator.storage?.getDirectory) {
      sink = await opfsSink(file.name).catch(() => blobSink(file.name));
    } else {
      sink = blobSink(file.name);
    }
    sink = coalesced(sink);
    try {
      if (!file.version) {
        await sink.finish();
        $("status").textContent = `Saved ${file.name} (empty).`;
        return;
      }
      const { opened, src } = await openLink(file);
      let done = 0;
      let shown = 0;
      for await (const piece of decryptPayload(opened, src)) {
        await sink.write(piece);
        done += piece.length;
        if (performance.now() - shown > 250) {
          shown = performance.now();
          $("status").textContent = `Decrypting: ${humanSize(done)} of ${humanSize(file.size)}…`;
        }
      }
    } catch (e) {
      await sink.abort();
      throw e;
    }
    await sink.finish();
    $("status").textContent = `Saved ${file.name} (verified).`;
  })().catch(fail).finally(() => {
    if (!document.body.dataset.failed) $("save").disabled = false;
  });
});

main().catch(fail).finally(() => (document.body.dataset.ready = "1"));
