// Signed blobs, the vault header, member records, the access log and share
// notices (docs/format.md 5.1, 5.2, 7.1-7.4).

import { contextBytes, decryptAll, MAX_ENVELOPE } from "./decoder.js";
import { int, isObject, parseStrict } from "./json.js";
import { parsePublicKeyFile } from "./keys.js";
import { nameOk } from "./manifest.js";
import { authError, base64Strict, CsfsError, ed25519Verify, enc, equalCT, formatError, fromHex, hex, readU32, sha256, strictUtf8 } from "./util.js";

const MAX_BLOB = 2 ** 20;
const ID = /^[0-9a-f]{32}$/;
const HASH_HEX = /^[0-9a-f]{64}$/;
const FINGERPRINT = /^SHA256:[A-Za-z0-9_-]{43}$/;
const MEMBER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ZERO_ID = "0".repeat(32);

// 5.1 -> {payload, signer}; layout errors are format errors, then the signature.
export async function parseSignedBlob(blob, domain) {
  if (blob.length < 4 + 96) throw formatError("short signed blob");
  const n = readU32(blob, 0);
  if (n > MAX_BLOB) throw formatError("signed blob payload above 2^20");
  if (blob.length !== 4 + n + 96) throw formatError("signed blob length does not match n");
  const signer = blob.subarray(4 + n, 4 + n + 32);
  const ok = await ed25519Verify(signer, blob.subarray(4 + n + 32), new Uint8Array([...enc.encode(domain), ...blob.subarray(0, 4 + n + 32)]));
  if (!ok) throw authError("bad signature on a signed object");
  return { payload: blob.subarray(4, 4 + n), signer };
}

function jsonObject(bytes, what) {
  let v;
  try {
    v = parseStrict(strictUtf8.decode(bytes), 16);
  } catch (e) {
    throw formatError(`${what} is not UTF-8 JSON (${e.message})`);
  }
  if (!isObject(v)) throw formatError(`${what} is not a JSON object`);
  return v;
}

// 5.2: the vault header.
export async function parseVaultHeader(blob) {
  const { payload, signer } = await parseSignedBlob(blob, "csfs v1 vault header\0");
  const h = jsonObject(payload, "the vault header");
  const keys = Object.keys(h).sort().join(",");
  if (h.format !== "csfs-vault-1" || keys !== "format,owner,root_id,vault_id") throw formatError("not a csfs-vault-1 header");
  if (typeof h.owner !== "string" || !HASH_HEX.test(h.owner)) throw formatError("vault header owner");
  if (![h.root_id, h.vault_id].every((x) => typeof x === "string" && ID.test(x))) throw formatError("vault header ids");
  if (!equalCT(fromHex(h.owner), signer)) throw authError("the vault header is not signed by its owner");
  return { owner: fromHex(h.owner), ownerHex: h.owner, rootId: h.root_id, vaultId: h.vault_id };
}

// 7.1: a member record -> {fingerprint, name, key}.
export async function parseMemberRecord(blob, vault) {
  const { payload, signer } = await parseSignedBlob(blob, "csfs v1 member record\0");
  if (!equalCT(signer, vault.owner)) throw authError("member record not signed by the owner");
  const r = jsonObject(payload, "member record");
  if (r.format !== "csfs-member-1") throw formatError("member record format is not csfs-member-1");
  if (r.vault_id !== vault.vaultId) throw formatError("member record names another vault");
  if (typeof r.name !== "string" || !MEMBER_NAME.test(r.name)) throw formatError("bad member name");
  if (typeof r.public !== "string") throw formatError("member record without a public key file");
  const key = await parsePublicKeyFile(r.public, { requireSignature: true });
  return { fingerprint: key.fingerprint, name: r.name, key, public: r.public };
}

// `env_len || envelope || payload` (5.3 layout) -> decrypted JSON, or null when no stanza opens.
export async function openLaidOut(obj, identity, context, signers, what = "decrypted body", limits = {}) {
  const { plaintext } = (await openLaidOutBytes(obj, identity, context, signers, limits)) ?? {};
  return plaintext === undefined ? null : jsonObject(plaintext, what);
}

export async function openLaidOutBytes(obj, identity, expected, signers, limits = {}) {
  if (obj.length < 4) throw formatError("short object");
  const envLen = readU32(obj, 0);
  if (envLen > MAX_ENVELOPE || envLen > obj.length - 4) throw formatError("env_len out of range");
  try {
    return await decryptAll({ envelope: obj.subarray(4, 4 + envLen), identity, expected, signers }, obj.subarray(4 + envLen), limits);
  } catch (e) {
    if (e instanceof CsfsError && e.kind === "no match") return null;
    throw e;
  }
}

const fpField = (b, k) => {
  if (typeof b[k] !== "string" || !FINGERPRINT.test(b[k])) throw formatError(`${k} is not a fingerprint`);
  return b[k];
};
const idField = (b, k) => {
  if (typeof b[k] !== "string" || !ID.test(b[k])) throw formatError(`${k} is not an id`);
  return b[k];
};
function shareType(b) {
  const t = "type" in b ? b.type : "d";
  if (t !== "d" && t !== "f") throw formatError("share type is neither 'd' nor 'f'");
  return t;
}

// 7.3: the derived state.
class State {
  constructor(vault) {
    this.vault = vault;
    this.files = [];
    this.members = new Map(); // fp -> {record (base64), member}
    this.grants = {};
    this.writers = {};
    this.links = {}; // 7.7, 7.8: link id -> {expires_ns, node, public, version (0: a folder link)}
  }

  // 7.3: a link-add's fields (also a link in a state).
  addLink(id, v) {
    if (typeof id !== "string" || !ID.test(id)) throw formatError("a link id is not an id");
    if (id in this.links) throw formatError("a link id added twice");
    if (!isObject(v)) throw formatError("a link is not an object");
    let version = 0n; // 7.8: a folder link ("type":"d") has no version
    if ("type" in v) {
      if (v.type !== "d") throw formatError("a link of an unknown type");
      if ("version" in v) throw formatError("a folder link with a version");
    } else {
      version = int(v.version, 1n, 2n ** 63n - 1n, "a link's version");
    }
    const expires = int(v.expires_ns, 0n, 2n ** 63n - 1n, "a link's expires_ns");
    if (typeof v.public !== "string" || !/^[0-9a-f]{64}$/.test(v.public)) throw formatError("a link's public key is not 64 hex digits");
    this.links[id] = { expires_ns: expires, node: idField(v, "node"), public: v.public, version };
  }

  async addMember(recordB64, fp = null) {
    const member = await parseMemberRecord(base64Strict(recordB64), this.vault);
    if (fp !== null && fp !== member.fingerprint) throw formatError("state names a member under another fingerprint");
    for (const [other, { member: m }] of this.members) {
      if (other !== member.fingerprint && m.name === member.name) throw formatError(`member name ${member.name} already in use`);
    }
    this.members.set(member.fingerprint, { record: recordB64, member });
    return member.fingerprint;
  }

  static async fromJson(v, vault) {
    if (!isObject(v) || !["grants", "members", "writers"].every((k) => k in v)) throw formatError("state lacks grants, members or writers");
    if (!Object.keys(v).every((k) => ["files", "grants", "links", "members", "writers"].includes(k))) throw formatError("state has unknown keys");
    const s = new State(vault);
    if (!isObject(v.members)) throw formatError("state members is not an object");
    for (const [fp, rec] of Object.entries(v.members)) await s.addMember(rec, fp);
    if (!isObject(v.grants) || !isObject(v.writers)) throw formatError("state grants/writers are not objects");
    for (const [node, holders] of Object.entries(v.grants)) {
      if (!ID.test(node) || !isObject(holders) || !Object.keys(holders).length) throw formatError("bad grants in state");
      for (const [fp, right] of Object.entries(holders)) {
        if (!s.members.has(fp) || (right !== "r" && right !== "w")) throw formatError("bad grant in state");
      }
      s.grants[node] = { ...holders };
    }
    s.setWriters(v.writers);
    const files = "files" in v ? v.files : [];
    if (!Array.isArray(files)) throw formatError("state files is not a list");
    for (const node of files) {
      if (typeof node !== "string" || !ID.test(node) || !(node in s.grants)) throw formatError("state files names a node without grants");
      if (!s.files.includes(node)) s.files.push(node);
    }
    const links = "links" in v ? v.links : {};
    if (!isObject(links)) throw formatError("state links is not an object");
    for (const [id, link] of Object.entries(links)) s.addLink(id, link);
    return s;
  }

  setWriters(w) {
    if (!isObject(w)) throw formatError("writers is not an object");
    for (const [root, fps] of Object.entries(w)) {
      if (!ID.test(root) || !Array.isArray(fps)) throw formatError("bad writers map");
      if (fps.some((fp) => typeof fp !== "string" || !FINGERPRINT.test(fp))) throw formatError("a writer is not a fingerprint");
      if (fps.length) this.writers[root] = [...fps];
      else delete this.writers[root];
    }
  }

  drop(fp) {
    for (const node of Object.keys(this.grants)) {
      delete this.grants[node][fp];
      if (!Object.keys(this.grants[node]).length) delete this.grants[node];
    }
    for (const root of Object.keys(this.writers)) {
      this.writers[root] = this.writers[root].filter((x) => x !== fp);
      if (!this.writers[root].length) delete this.writers[root];
    }
  }

  async apply(body) {
    const op = body.op;
    if (op === "member-add") {
      if (!("state" in body)) throw formatError("member-add without state");
      await this.addMember(body.record);
    } else if (op === "member-remove") {
      const fp = fpField(body, "member");
      if (this.members.has(fp)) {
        this.members.delete(fp);
        this.drop(fp);
      }
    } else if (op === "share") {
      const node = idField(body, "node");
      const fp = fpField(body, "member");
      idField(body, "notice");
      if (!this.members.has(fp) || typeof body.write !== "boolean") throw formatError("share names a non-member or lacks write");
      const kind = shareType(body);
      if (kind === "f" && body.write) throw formatError("a file share with write true");
      (this.grants[node] ??= {})[fp] = body.write ? "w" : "r";
      this.setWriters(body.writers);
      if (kind === "f" && !this.files.includes(node)) this.files.push(node);
    } else if (op === "unshare") {
      const node = idField(body, "node");
      const fp = fpField(body, "member");
      if (this.grants[node]) {
        delete this.grants[node][fp];
        if (!Object.keys(this.grants[node]).length) delete this.grants[node];
      }
      this.setWriters(body.writers);
    } else if (op === "link-add") {
      this.addLink(body.link, body);
    } else if (op === "link-remove") {
      delete this.links[idField(body, "link")];
    } else {
      throw formatError(`unknown log op ${JSON.stringify(op)}`);
    }
    this.files = this.files.filter((n) => n in this.grants);
  }
}

class MisplacedEntry extends CsfsError {}

// 7.2: the checks on every owner entry -> the entry JSON.
async function verifyEntry(blob, seq, prev, vault) {
  const { payload, signer } = await parseSignedBlob(blob, "csfs v1 log entry\0");
  if (!equalCT(signer, vault.owner)) throw authError("log entry not signed by the owner");
  const e = jsonObject(payload, "log entry");
  if (e.format !== "csfs-log-1") throw formatError("log entry format is not csfs-log-1");
  if (e.vault_id !== vault.vaultId) throw formatError("log entry names another vault");
  if (typeof e.seq !== "bigint") throw authError(`object a/${seq} holds a bad seq`);
  if (e.seq !== BigInt(seq)) throw new MisplacedEntry("authentication", `object a/${seq} holds entry ${e.seq}`);
  if (typeof e.prev !== "string" || !HASH_HEX.test(e.prev)) throw authError("prev is not 64 lowercase hex digits");
  if (!equalCT(fromHex(e.prev), prev)) throw authError(`the access log was changed: entry ${seq} does not follow the one before`);
  return e;
}

// 7.4: the notice named by share entry `seq`.
async function readNotice(obj, share, seq, identity, vault) {
  if (!obj) throw authError("the notice named by a share entry is missing");
  const ctx = contextBytes(5, vault.vaultId, share.notice, seq);
  const notice = await openLaidOut(obj, identity, ctx, [vault.owner], "notice", { maxLength: 4096, what: "a share notice" });
  if (!notice) throw authError("the grantee cannot open its notice");
  if (notice.format !== "csfs-share-1") throw formatError("notice format is not csfs-share-1");
  if (notice.type !== "d" && notice.type !== "f") throw formatError("notice type is neither 'd' nor 'f'");
  if (!nameOk(notice.name) || typeof notice.owner !== "string") throw formatError("bad notice name or owner");
  if (notice.node !== share.node || notice.write !== share.write || notice.type !== shareType(share)) {
    throw authError("the share notice does not match its log entry");
  }
  return { name: notice.name, node: share.node, owner: notice.owner, write: share.write, type: notice.type };
}

/**
 * Verify the log (7.2) and derive what `identity` gets from it (7.3, 7.4).
 * header: bytes of csfs-vault; entries: Map seq -> bytes; notices: id -> bytes
 * (or an async function id -> bytes|null); pinned: {seq, hash (bytes)} or null.
 * Returns {vault, state, notices, readable, head: {seq, hash}}.
 */
export async function readLog(header, entries, notices, identity, pinned = null) {
  const vault = await parseVaultHeader(header);
  const seqs = [...entries.keys()].sort((a, b) => a - b);
  const top = seqs.length ? seqs[seqs.length - 1] : 0;
  if (pinned) {
    if (top < pinned.seq || !entries.has(pinned.seq)) throw authError("the access log is shorter than this browser last saw (rollback)");
    if (!equalCT(await sha256(entries.get(pinned.seq)), pinned.hash)) throw authError("the access log was rewritten since this browser last saw it");
  }
  let prev = await sha256(header);
  let head = null;
  const verified = new Map();
  for (const seq of seqs) {
    const blob = entries.get(seq);
    let signer;
    try {
      ({ signer } = await parseSignedBlob(blob, "csfs v1 log entry\0"));
    } catch {
      continue; // planted
    }
    if (!equalCT(signer, vault.owner)) continue; // planted
    try {
      verified.set(seq, await verifyEntry(blob, seq, prev, vault));
    } catch (e) {
      if (e instanceof MisplacedEntry) continue; // a copy of an owner entry: planted
      throw e;
    }
    prev = await sha256(blob);
    head = { seq, hash: prev };
  }
  const bodies = new Map();
  for (const [seq, entry] of verified) {
    const ctx = contextBytes(4, vault.vaultId, ZERO_ID, seq);
    bodies.set(seq, await openLaidOut(base64Strict(entry.body), identity, ctx, [vault.owner]));
  }
  const me = identity.fingerprint;
  const isOwner = equalCT(identity.edPub, vault.owner);
  const getNotice = typeof notices === "function" ? notices : async (id) => notices[id] ?? null;
  let state = null;
  const held = new Map();
  for (const [seq] of verified) {
    const body = bodies.get(seq);
    if (state === null) {
      if (body && body.op === "member-add") {
        const rec = await parseMemberRecord(base64Strict(body.record), vault);
        if (rec.fingerprint === me) {
          state = await State.fromJson(body.state, vault);
          if (!state.members.has(me)) throw formatError("member-add state lacks the member it adds");
        }
      }
      continue;
    }
    if (!body) {
      state = null; // 7.3: removed
      held.clear();
      continue;
    }
    await state.apply(body);
    if (body.op === "share" && body.member === me && !isOwner) {
      held.set(body.node, await readNotice(await getNotice(body.notice), body, seq, identity, vault));
    }
  }
  state ??= new State(vault);
  const heldNow = [...held.keys()].sort().filter((n) => state.grants[n] && me in state.grants[n]).map((n) => held.get(n));
  return { vault, state, notices: heldNow, readable: [...verified.keys()].map((s) => bodies.get(s) !== null), head };
}

// 6.1's `result` form.
export function resultJson(r) {
  const members = {};
  for (const [fp, { member }] of r.state.members) members[fp] = member.name;
  return {
    grants: r.state.grants,
    links: Object.fromEntries(Object.entries(r.state.links).map(([k, v]) => [k, v.version ? `${v.node}/${v.version.toString(16).padStart(16, "0")}` : `${v.node}/folder`])),
    members,
    notices: r.notices.map(({ name, node, owner, write }) => ({ name, node, owner, write })),
    readable: r.readable,
    writers: r.state.writers,
  };
}

export { hex };
