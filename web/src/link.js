// The share-link page (docs/format.md 7.7): one file, read with the key in the
// URL fragment (never sent to a server) through two presigned GET URLs. A link
// holder cannot read the access log, so only the owner's signature counts.

import { contextBytes, decryptPayload, MAX_ENVELOPE, MAX_MAP, openEnvelope, padme, chunkCount } from "./decoder.js";
import { int, isObject, parseStrict } from "./json.js";
import { linkIdentity } from "./keys.js";
import { nameOk } from "./manifest.js";
import { readBounded } from "./s3.js";
import { blobSink, coalesced, opfsSink, pickerSink, saveMode } from "./sinks.js";
import { authError, CsfsError, formatError, fromHex, strictUtf8 } from "./util.js";

const $ = (id) => document.getElementById(id);
const KEYS = ["envelope", "expires", "format", "key", "name", "node", "owner", "payload", "size", "vault_id", "version"];
const ID = /^[0-9a-f]{32}$/;
const HEX32 = /^[0-9a-f]{64}$/;
const PREVIEW_MAX = 1 << 20;
const maxpay = (m) => 32 + padme(m) + 16 * chunkCount(padme(m), 4096); // 5
const linkError = (m) => new CsfsError("link", m);

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
  if (!isObject(link) || link.format !== "csfs-link-1") throw formatError("this is not a csfs link");
  const keys = Object.keys(link);
  if (keys.length !== KEYS.length || !KEYS.every((k) => k in link)) throw formatError("this link is damaged or incomplete");
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

const expired = (link) => Date.now() >= link.expires * 1000;

// A presigned URL's answer -> the message a person can act on.
async function refused(res, link) {
  const text = await res.text().catch(() => "");
  if (res.status === 404 || /NoSuchKey/.test(text)) return linkError("this link was ended by its owner (or its file is gone); ask for a new link");
  if (expired(link) || /expired/i.test(text)) return linkError("this link has expired; ask for a new link");
  const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP ${res.status}`;
  return new CsfsError("store", `the store refused this link (${code})`);
}

async function get(url, link, headers) {
  let res;
  try {
    res = await fetch(url, { headers, cache: "no-store", referrerPolicy: "no-referrer" });
  } catch {
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
  return { size, read };
}

// 7.7 "Reading a link": the version opened, checked against the fragment.
async function openLink(link) {
  if (expired(link)) throw linkError("this link has expired; ask for a new link");
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

let link = null;

async function main() {
  link = parseLink(location.hash);
  // The key leaves the address bar (and the history entry) once read.
  history.replaceState(null, "", location.pathname + location.search);
  $("name").textContent = link.name;
  $("size").textContent = humanSize(link.size);
  $("expires").textContent = new Date(link.expires * 1000).toLocaleString();
  $("file").hidden = false;
  $("status").textContent = "Verifying the file…";
  const { opened, src } = await openLink(link);
  $("save").disabled = false;
  $("status").textContent = "Verified: signed by the vault's owner.";
  // A small file that is UTF-8 text is shown here; anything else is saved.
  if (link.size <= PREVIEW_MAX) {
    const parts = [];
    for await (const p of decryptPayload(opened, src)) parts.push(p.slice());
    const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
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

$("save").addEventListener("click", () => {
  const usePicker = "showSaveFilePicker" in window && !saveMode;
  const picked = usePicker ? window.showSaveFilePicker({ suggestedName: link.name }).catch(() => null) : null;
  $("save").disabled = true;
  (async () => {
    let sink;
    if (usePicker) {
      const handle = await picked;
      if (!handle) return ($("status").textContent = "Not saved.");
      sink = await pickerSink(handle);
    } else if (saveMode !== "blob" && navigator.storage?.getDirectory) {
      sink = await opfsSink(link.name).catch(() => blobSink(link.name));
    } else {
      sink = blobSink(link.name);
    }
    sink = coalesced(sink);
    try {
      const { opened, src } = await openLink(link);
      let done = 0;
      let shown = 0;
      for await (const piece of decryptPayload(opened, src, { batch: 16 << 20 })) {
        await sink.write(piece);
        done += piece.length;
        if (performance.now() - shown > 250) {
          shown = performance.now();
          $("status").textContent = `Decrypting: ${humanSize(done)} of ${humanSize(link.size)}…`;
        }
      }
    } catch (e) {
      await sink.abort();
      throw e;
    }
    await sink.finish();
    $("status").textContent = `Saved ${link.name} (verified).`;
  })().catch(fail).finally(() => {
    if (!document.body.dataset.failed) $("save").disabled = false;
  });
});

main().catch(fail).finally(() => (document.body.dataset.ready = "1"));
