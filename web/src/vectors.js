// Runs the decoder over the test vectors of docs/format.md 6 and 6.1.

import { bytesSource, contextBytes, decryptAll } from "./decoder.js";
import { loadIdentity } from "./keys.js";
import { parseListing } from "./listing.js";
import { parseManifest } from "./manifest.js";
import { readLog, resultJson } from "./log.js";
import { CsfsError, fromHex, hex, readU64, sha256 } from "./util.js";

const identities = new Map();
async function identity(base, name) {
  if (!identities.has(name)) {
    const text = await (await fetch(`${base}/keys/${name}.pem`)).text();
    identities.set(name, await loadIdentity(text, ""));
  }
  return identities.get(name);
}

function outcome(e) {
  if (e instanceof CsfsError && ["format", "authentication", "no match"].includes(e.kind)) {
    return { got: e.kind, detail: e.message };
  }
  return { got: "crash", detail: `${e.name}: ${e.message}` }; // never an expected outcome
}

// One .vec file (6): text header, empty line, envelope || payload.
export async function runFileVector(base, name) {
  const bytes = new Uint8Array(await (await fetch(`${base}/${name}`)).arrayBuffer());
  let cut = 0;
  while (!(bytes[cut] === 10 && bytes[cut + 1] === 10)) cut++;
  const fields = Object.fromEntries(
    new TextDecoder().decode(bytes.subarray(0, cut)).split("\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]),
  );
  const body = bytes.subarray(cut + 2);
  const envLen = Number(fields["envelope-length"]);
  const envelope = body.subarray(0, envLen);
  const payLen = Number(fields["payload-length"]);
  const payload = body.subarray(envLen, envLen + payLen);
  // 6: a delta's sources follow the payload, in the order listed.
  const sources = new Map();
  let at = envLen + payLen;
  for (const item of fields.sources ? fields.sources.split(",") : []) {
    const [v, len] = item.trim().split("=");
    sources.set(v, body.subarray(at, at + Number(len)));
    at += Number(len);
  }
  const fetchSource = async (v) => (sources.has(v) ? bytesSource(sources.get(v)) : null);
  const expected = fields.context ? fromHex(fields.context) : null;
  try {
    const id = await identity(base, fields.identity);
    const { plaintext } = await decryptAll({ envelope, identity: id, expected }, payload, { fetchSource });
    if (fields.object === "manifest") {
      parseManifest(plaintext, hex(expected.subarray(17, 33)), readU64(expected, 33));
    }
    if (fields.object === "folder-listing") {
      parseListing(plaintext, hex(expected.subarray(17, 33)), readU64(expected, 33));
    }
    return { expect: fields.expect, got: "success", sha256: hex(await sha256(plaintext)), want: fields["plaintext-sha256"] };
  } catch (e) {
    return { expect: fields.expect, ...outcome(e) };
  }
}

// One log vector (6.1).
export async function runLogVector(base, name) {
  const c = await (await fetch(`${base}/log/${name}`)).json();
  try {
    const id = await identity(base, c.identity);
    const entries = new Map(Object.entries(c.entries).filter(([k]) => /^[0-9]+$/.test(k)).map(([k, v]) => [Number(k), fromHex(v)]));
    const notices = Object.fromEntries(Object.entries(c.notices).map(([k, v]) => [k, fromHex(v)]));
    const pinned = c.pinned ? { seq: Number(c.pinned.seq), hash: fromHex(c.pinned.hash) } : null;
    const r = await readLog(fromHex(c.header), entries, notices, id, pinned);
    return { expect: c.expect, got: "success", result: resultJson(r), want: c.result };
  } catch (e) {
    return { expect: c.expect, ...outcome(e) };
  }
}

export { contextBytes };
