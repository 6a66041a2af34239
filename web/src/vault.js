// A vault in a store (docs/format.md 5 and 7), read-only, as the mount shows it:
// the owner (or a key named as a reader) from the root, a member through
// Shared/<owner>/<share name>.
//
// `store`: {get(key, max) -> bytes|null, source(key, max) -> {size, read, open}|null,
// list(prefix) -> keys}. `memory`: {get(name), set(name, value)} for what a
// client must remember between runs (header hash, log head, manifest versions).

import { contextBytes, decryptPayload, MAX_ENVELOPE, MAX_MAP, openEnvelope, padme, chunkCount } from "./decoder.js";
import { openLaidOutBytes, parseVaultHeader, readLog } from "./log.js";
import { parseManifest } from "./manifest.js";
import { authError, CsfsError, equalCT, formatError, hex, fromHex, readU32, readU64, sha256 } from "./util.js";

const MAX_BLOB_OBJECT = 4 + 2 ** 20 + 96; // 5
const maxpay = (m) => 32 + padme(m) + 16 * chunkCount(padme(m), 4096); // 5: C = 4096
const MAX_MANIFEST_OBJECT = 4 + MAX_ENVELOPE + maxpay(32 * 2 ** 20);

export class Vault {
  static async open(store, identity, memory) {
    const header = await store.get("csfs-vault", MAX_BLOB_OBJECT);
    if (!header) throw new CsfsError("store", "there is no csfs vault at this location");
    // 5.2: the header's hash is pinned the first time, compared before parsing.
    const hh = hex(await sha256(header));
    const pin = memory.get(`header:${store.label}`);
    if (pin && pin !== hh) throw authError("the vault header changed since this browser first opened this vault");
    const seqs = (await store.list("a/"))
      .map((k) => /^a\/([0-9a-f]{16})$/.exec(k))
      .filter(Boolean)
      .map((m) => Number.parseInt(m[1], 16))
      .filter((n) => Number.isSafeInteger(n));
    const entries = new Map();
    await Promise.all(seqs.map(async (s) => {
      const obj = await store.get(`a/${s.toString(16).padStart(16, "0")}`, MAX_BLOB_OBJECT);
      if (obj) entries.set(s, obj);
    }));
    const notices = async (id) => (/^[0-9a-f]{32}$/.test(id) ? store.get(`n/${id}`, 4 + MAX_ENVELOPE + maxpay(4096)) : null);
    const { vaultId } = await parseVaultHeader(header);
    const headKey = `head:${vaultId}:${identity.fingerprint}`;
    const pinnedHead = memory.get(headKey);
    const pinned = pinnedHead ? { seq: pinnedHead.seq, hash: fromHex(pinnedHead.hash) } : null;
    const log = await readLog(header, entries, notices, identity, pinned);
    memory.set(`header:${store.label}`, hh);
    if (log.head) memory.set(headKey, { seq: log.head.seq, hash: hex(log.head.hash) });
    return new Vault(store, identity, memory, log);
  }

  constructor(store, identity, memory, log) {
    this.store = store;
    this.identity = identity;
    this.memory = memory;
    this.vault = log.vault;
    this.state = log.state;
    this.notices = log.notices;
    this.isOwner = equalCT(identity.edPub, this.vault.owner);
    const me = identity.fingerprint;
    this.sharedView = !this.isOwner && (this.state.members.has(me) || this.notices.length > 0);
    this.ownerName = [...this.state.members.values()].find((m) => equalCT(m.member.key.edPub, this.vault.owner))?.member.name ?? "owner";
    this.seenUnder = new Map(); // dir id -> Set of the share roots it was reached under (7.3)
  }

  root() {
    if (this.sharedView) return { kind: "virtual", path: "/", name: "" };
    const id = this.vault.rootId;
    return { kind: "dir", id, root: id in this.state.grants ? id : null, name: "" };
  }

  // 7.3: owner plus the members listed as writers of share root R.
  writersOf(root) {
    const keys = [this.vault.owner];
    for (const fp of root === null ? [] : this.state.writers[root] ?? []) {
      const m = this.state.members.get(fp);
      if (m) keys.push(m.member.key.edPub);
    }
    return keys;
  }

  // The writers authorised on every path by which `id` was seen (7.3: intersection).
  signersFor(id, root) {
    const roots = this.seenUnder.get(id) ?? new Set([root]);
    let keys = null;
    for (const r of roots) {
      const w = this.writersOf(r);
      keys = keys === null ? w : keys.filter((k) => w.some((x) => equalCT(x, k)));
    }
    return keys;
  }

  // 5.3: m/<id>, verified, with the rollback rule.
  async loadDir(id, root) {
    const obj = await this.store.get(`m/${id}`, MAX_MANIFEST_OBJECT);
    if (!obj) throw authError("a folder's listing is missing from the store");
    if (obj.length < 4) throw formatError("short manifest object");
    const envLen = readU32(obj, 0);
    const version = envLen >= 49 && obj.length >= 4 + 49 ? readU64(obj, 4 + 41) : 0n;
    if (version < 1n || version >= 2n ** 63n) throw formatError("manifest version out of range");
    const expected = contextBytes(3, this.vault.vaultId, id, version);
    // 5.3: the plaintext length is checked before any chunk is decrypted.
    const got = await openLaidOutBytes(obj, this.identity, expected, this.signersFor(id, root),
      { maxLength: 32 * 2 ** 20, what: "a folder listing" });
    if (!got) throw new CsfsError("no match", "this key is not a reader of this folder");
    const manifest = parseManifest(got.plaintext, id, version);
    const key = `m:${this.vault.vaultId}:${this.identity.fingerprint}:${id}`;
    const seen = BigInt(this.memory.get(key) ?? "0");
    if (version < seen) throw authError("this folder's listing was rolled back to an older version");
    this.memory.set(key, version.toString());
    return manifest;
  }

  // The entries of a folder -> [{name, type, size, ref (folders), entry (files), root}].
  async list(ref) {
    if (ref.kind === "virtual") {
      if (ref.path === "/") return [{ name: "Shared", type: "d", ref: { kind: "virtual", path: "/Shared", name: "Shared" } }];
      if (ref.path === "/Shared") {
        return [{ name: this.ownerName, type: "d", ref: { kind: "virtual", path: "/Shared/owner", name: this.ownerName } }];
      }
      const out = [];
      const used = new Set();
      for (const n of this.notices) {
        let name = n.name;
        for (let k = 2; used.has(name); k++) name = `${n.name} (${k})`;
        used.add(name);
        if (n.type === "f") {
          // 7.6: a file share is the one entry of its pointer m/<F>.
          try {
            const pointer = await this.loadDir(n.node, n.node);
            const e = Object.values(pointer.entries).find((x) => x.id === n.node);
            if (e) out.push(this.item(name, e, n.node));
          } catch {
            // shown once it can be read and verified, as the mount does
          }
          continue;
        }
        out.push({ name, type: "d", ref: { kind: "dir", id: n.node, root: n.node, name } });
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    }
    const m = await this.loadDir(ref.id, ref.root);
    const out = [];
    for (const name of Object.keys(m.entries).sort()) {
      const e = m.entries[name];
      if (e.type === "d") {
        const root = e.id in this.state.grants ? e.id : ref.root;
        if (!this.seenUnder.has(e.id)) this.seenUnder.set(e.id, new Set());
        this.seenUnder.get(e.id).add(root);
        out.push({ name, type: "d", ref: { kind: "dir", id: e.id, root, name } });
      } else {
        out.push(this.item(name, e, ref.root, ref.id));
      }
    }
    return out;
  }

  item(name, e, root, parent = null) {
    return { name, type: e.type, size: e.type === "f" ? Number(e.size) : null, entry: e, root, parent };
  }

  /**
   * 5.4: a file's plaintext, piece by piece, each piece after its tag verified.
   * Also checks the unsealed length against the entry's size before any chunk.
   */
  async *readFile(item, options = {}) {
    const e = item.entry;
    if (e.version === 0n) return;
    const v = e.version.toString(16).padStart(16, "0");
    const envelope = await this.store.get(`k/${e.id}/${v}`, MAX_ENVELOPE);
    const src = await this.store.source(`c/${e.id}/${v}`, maxpay(Number(e.size)) + MAX_MAP);
    if (!envelope || !src) throw authError("this file's version is missing from the store");
    const opened = await openEnvelope({
      envelope,
      payloadStart: await src.read(0, 32),
      identity: this.identity,
      expected: contextBytes(2, this.vault.vaultId, e.id, e.version),
      signers: item.parent ? this.signersFor(item.parent, item.root) : this.writersOf(item.root),
    });
    if (BigInt(opened.L) !== e.size) throw authError("the file's sealed length differs from its listed size");
    // 2.6: a delta's sources are earlier payloads of the same file, c/F/<version>.
    const fetchSource = (vhex, length) => this.store.source(`c/${e.id}/${vhex}`, maxpay(length) + MAX_MAP);
    yield* decryptPayload(opened, src, { ...options, fetchSource });
  }
}
