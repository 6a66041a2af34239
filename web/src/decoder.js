// Envelopes and payloads (docs/format.md 2 and 3), in the order of checks of 3.6.
//
// Payload bytes come from a *source* ({size, read(start, end)}), and chunks are
// located by chunkLocations(): each location names the object, byte range, key
// and AAD of one chunk, so a delta version's inherited chunks (2.6), which live
// in earlier versions' payloads under their own keys, decrypt like any other.

import { authError, concat, CsfsError, ed25519Verify, enc, equalCT, formatError, hkdf, readU16, readU32, readU64, sha256, u64be } from "./util.js";

export const MAX_ENVELOPE = 2 * 1024 * 1024; // 3.1
const STANZAS_AT = 139; // 3.1
const MAX_LENGTH = 2 ** 48; // 3.4
const ENC_LEN = { 0x0020: 32, 0x0010: 65, 0x647a: 1120 }; // 1.1
const MAX_EXTENTS = 2 ** 20; // 2.5
const MAX_SOURCES = 8; // 2.6

export function padme(n) {
  // 2.3, exact for n < 2^53 (mask is a power of two, so n / mask is exact).
  if (n < 2) return n;
  const e = n.toString(2).length - 1;
  const s = e.toString(2).length;
  const mask = 2 ** (e - s);
  return Math.ceil(n / mask) * mask;
}

export function chunkCount(p, c) {
  return Math.max(1, Math.ceil(p / c)); // 2.4
}

const mapBlock = (k) => padme(8 + 16 * k) + 16; // 2.5
const deltaMapBlock = (s, k) => padme(16 + 80 * s + 24 * k) + 16; // 2.6
export const MAX_MAP = deltaMapBlock(MAX_SOURCES, MAX_EXTENTS); // the largest map of any form (5)

// 3.1-3.3 (step 1 of 3.6): every failure is a format error.
export function parseEnvelope(env) {
  if (env.length > MAX_ENVELOPE) throw formatError("envelope larger than 2 MiB");
  if (env.length < STANZAS_AT + 96) throw formatError("short envelope");
  if (String.fromCharCode(...env.subarray(0, 8)) !== "csfs-ev1") throw formatError("bad envelope magic");
  const context = env.subarray(8, 49);
  if (context[0] < 1 || context[0] > 6) throw formatError("unknown context kind"); // 3.2: 6 is 7.8's
  if (readU64(context, 33) >= 2n ** 63n) throw formatError("context version 2^63 or more");
  const count = readU16(env, 137);
  if (count < 1 || count > 1024) throw formatError("stanza count out of range");
  const stanzas = [];
  let pos = STANZAS_AT;
  for (let i = 0; i < count; i++) {
    if (pos + 4 > env.length) throw formatError("short envelope");
    const kemId = readU16(env, pos);
    const sealedLen = readU16(env, pos + 2);
    if (!(kemId in ENC_LEN)) throw formatError("unknown kem_id");
    if (sealedLen !== ENC_LEN[kemId] + 48) throw formatError("wrong sealed_len");
    if (pos + 4 + sealedLen > env.length) throw formatError("short envelope");
    stanzas.push({ kemId, sealed: env.subarray(pos + 4, pos + 4 + sealedLen) });
    pos += 4 + sealedLen;
  }
  if (env.length - pos < 96) throw formatError("short envelope");
  if (env.length - pos > 96) throw formatError("trailing bytes after the signature");
  return {
    context,
    headerHash: env.subarray(49, 81),
    sealedLength: env.subarray(81, 105),
    commitment: env.subarray(105, 137),
    stanzas,
    signer: env.subarray(pos, pos + 32),
    signed: env.subarray(0, pos + 32),
    signature: env.subarray(pos + 32),
  };
}

// 2.1, 2.5 and 2.6: the 32-byte header -> {header, C, payloadId, mapSize (0: dense), delta}.
export function parseHeader(payloadStart) {
  const header = payloadStart.subarray(0, 32);
  const magic = header.length === 32 ? String.fromCharCode(...header.subarray(0, 8)) : "";
  if (!["csfs-pl1", "csfs-pl2", "csfs-pl3"].includes(magic)) throw formatError("bad payload header");
  if (header[8] < 12 || header[8] > 20) throw formatError("chunk_shift out of range");
  const C = 2 ** header[8];
  const payloadId = header.subarray(16, 32);
  if (magic === "csfs-pl1") {
    if (header.subarray(9, 16).some((x) => x)) throw formatError("non-zero reserved byte");
    return { header, C, payloadId, mapSize: 0, delta: false };
  }
  if (header.subarray(9, 12).some((x) => x)) throw formatError("non-zero reserved byte");
  const mapSize = readU32(header, 12);
  const delta = magic === "csfs-pl3";
  const [lo, hi] = delta ? [136, MAX_MAP] : [32, mapBlock(MAX_EXTENTS)];
  if (mapSize < lo || mapSize > hi) throw formatError("map_size out of range");
  return { header, C, payloadId, mapSize, delta };
}

// 3.2, from hex ids.
export function contextBytes(kind, vaultIdHex, nodeIdHex, version) {
  const out = new Uint8Array(41);
  out[0] = kind;
  for (let i = 0; i < 16; i++) {
    out[1 + i] = parseInt(vaultIdHex.substr(2 * i, 2), 16);
    out[17 + i] = parseInt(nodeIdHex.substr(2 * i, 2), 16);
  }
  out.set(u64be(version), 33);
  return out;
}

async function aesKey(raw) {
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
}

async function aesOpen(key, nonce, data, aad) {
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, key, data));
  } catch {
    return null;
  }
}

// 3.6 steps 1-4. `expected`: the context the reader expects (null: an offline
// file, from the header). `signers`: accepted writer keys (null: any signer,
// reported). Returns what the payload reader needs.
export async function openEnvelope({ envelope, payloadStart, identity, expected = null, signers = null }) {
  const env = parseEnvelope(envelope);
  const hdr = parseHeader(payloadStart);
  // 2.6: a delta exists only as a vault file version (context kind 2).
  if (hdr.delta && expected?.[0] !== 2) throw formatError("a delta payload outside a vault file version");
  const H = await sha256(hdr.header);
  // Step 2: the signature.
  const ok = await ed25519Verify(env.signer, env.signature, concat(enc.encode("csfs v1 envelope\0"), env.signed));
  if (!ok) throw authError("the envelope's signature is invalid");
  if (signers && !signers.some((s) => equalCT(s, env.signer))) {
    throw authError("the envelope is signed by someone who may not write here");
  }
  // Step 3: context and header hash.
  const want = expected ?? concat(new Uint8Array([1]), new Uint8Array(16), hdr.payloadId, new Uint8Array(8));
  if (!equalCT(env.context, want)) throw authError("the envelope belongs to another file or version");
  if (!equalCT(env.headerHash, H)) throw authError("the envelope belongs to another payload");
  // Step 4: the first stanza that opens is final.
  const info = concat(enc.encode("csfs v1 wrap\0"), env.context, env.headerHash);
  let K = null;
  for (const s of env.stanzas) {
    if (s.kemId !== identity.kemId) continue;
    K = await identity.open(s.sealed, info);
    if (K) break;
  }
  if (!K) throw new CsfsError("no match", "this key cannot open the file");
  if (K.length !== 32) throw formatError("the wrapped content key is not 32 bytes");
  if (!equalCT(await hkdf(K, hdr.payloadId, "csfs v1 commitment"), env.commitment)) {
    throw authError("the key commitment does not match");
  }
  const lengthKey = await aesKey(await hkdf(K, H, "csfs v1 length"));
  const lenBytes = await aesOpen(lengthKey, new Uint8Array(12), env.sealedLength, env.context);
  if (!lenBytes) throw authError("the sealed length does not authenticate");
  const L64 = readU64(lenBytes, 0);
  if (L64 > BigInt(MAX_LENGTH)) throw formatError("plaintext length above 2^48");
  return {
    ...hdr,
    H,
    L: Number(L64),
    context: env.context,
    version: readU64(env.context, 33),
    signer: env.signer,
    payloadKey: await aesKey(await hkdf(K, hdr.payloadId, "csfs v1 payload")),
  };
}

const MAP_NONCE = concat(new Uint8Array(11), new Uint8Array([2])); // 2.5

// 2.5: decrypt and check the chunk map -> sorted runs [first, stop).
async function readMap(key, H, L, block, n) {
  const plain = await aesOpen(key, MAP_NONCE, block, concat(H, u64be(L)));
  if (!plain) throw authError("the chunk map does not authenticate");
  const k = Number(readU64(plain, 0));
  if (k < 1 || k > MAX_EXTENTS || block.length !== mapBlock(k)) throw authError("the map size does not match its extent count");
  if (plain.subarray(8 + 16 * k).some((x) => x)) throw authError("non-zero map padding");
  const runs = [];
  for (let j = 0; j < k; j++) {
    const first = readU64(plain, 8 + 16 * j);
    const count = readU64(plain, 16 + 16 * j);
    const prevStop = runs.length ? BigInt(runs[runs.length - 1][1]) : -1n;
    if (count < 1n || first <= prevStop || first + count > BigInt(n)) {
      throw authError("map extents empty, unordered, overlapping, touching or past the end");
    }
    runs.push([Number(first), Number(first + count)]);
  }
  if (runs[runs.length - 1][1] !== n) throw authError("the last chunk is not present");
  return runs;
}

// 2.6: decrypt and check a delta's map -> {sources: [{version, length, hash, key}],
// runs: [[first, stop, origin]]} (origin 0: stored here; a gap is a hole).
// `own`: the version of the payload's own context. Every breach is an
// authentication error (only a holder of the content key could write it).
async function readDeltaMap(key, H, L, block, n, C, own) {
  const plain = await aesOpen(key, MAP_NONCE, block, concat(H, u64be(L)));
  if (!plain) throw authError("the delta map does not authenticate");
  const num = (at) => readU64(plain, at);
  const s = Number(num(0));
  const k = Number(num(8));
  if (s < 1 || s > MAX_SOURCES || k < 1 || k > MAX_EXTENTS) throw authError("source or extent count out of range");
  if (block.length !== deltaMapBlock(s, k)) throw authError("the map size does not match its counts");
  if (plain.subarray(16 + 80 * s + 24 * k).some((x) => x)) throw authError("non-zero map padding");
  const sources = [];
  for (let j = 0; j < s; j++) {
    const at = 16 + 80 * j;
    const version = num(at);
    const length = num(at + 8);
    if (version < 1n || version >= 2n ** 63n || version === own) throw authError("bad source version");
    if (sources.length && version <= sources[sources.length - 1].version) throw authError("source versions not strictly increasing");
    if (length > BigInt(MAX_LENGTH)) throw authError("source length above 2^48");
    sources.push({
      version,
      length: Number(length),
      hash: plain.slice(at + 16, at + 48),
      key: plain.slice(at + 48, at + 80),
    });
  }
  const runs = [];
  const used = new Set();
  let prevStop = 0n;
  let prevOrigin = -1n;
  for (let j = 0; j < k; j++) {
    const at = 16 + 80 * s + 24 * j;
    const first = num(at);
    const count = num(at + 8);
    const origin = num(at + 16);
    if (count < 1n || origin > BigInt(s)) throw authError("an empty extent or an unknown origin");
    if (j && (first < prevStop || (first === prevStop && origin === prevOrigin))) {
      throw authError("map extents unordered, overlapping, or touching with one origin");
    }
    if (first + count > BigInt(n)) throw authError("an extent past the last chunk");
    if (origin > 0n) {
      const nO = chunkCount(padme(sources[Number(origin) - 1].length), C);
      if (first + count > BigInt(nO - 1)) throw authError("a reference beyond the source's chunks or to its last chunk");
      used.add(Number(origin));
    }
    runs.push([Number(first), Number(first + count), Number(origin)]);
    prevStop = first + count;
    prevOrigin = origin;
  }
  const last = runs[runs.length - 1];
  if (last[1] !== n || last[2] !== 0) throw authError("the last chunk is not stored in the delta");
  if (used.size !== s) throw authError("a source is never used");
  return { sources, runs };
}

// 2.6 steps 1-3 for source `src` ({version, length, hash, key}) of a delta whose
// chunk size is C: its payload object and, per chunk it stores, where the
// ciphertext is. `fetchSource(versionHex, length)` -> a source or null.
async function openDeltaSource(src, C, fetchSource) {
  const vhex = src.version.toString(16).padStart(16, "0");
  const obj = await fetchSource(vhex, src.length);
  // A missing payload is treated as the vault treats its own missing payload.
  if (!obj) throw authError(`an earlier version this file draws on (${vhex}) is missing from the store`);
  const header = await obj.read(0, 32);
  if (header.length !== 32 || !equalCT(await sha256(header), src.hash)) throw authError("an earlier version's header differs");
  let hdr;
  try {
    hdr = parseHeader(header);
  } catch {
    throw authError("an earlier version's header is not a payload header");
  }
  if (hdr.C !== C) throw authError("an earlier version has another chunk size");
  const key = await aesKey(await hkdf(src.key, hdr.payloadId, "csfs v1 payload"));
  const n = chunkCount(padme(src.length), C);
  const offset = new Map(); // chunk -> start of its ciphertext in obj
  let pos = 32 + hdr.mapSize;
  if (!hdr.mapSize) {
    for (let i = 0; i < n; i++) offset.set(i, 32 + i * (C + 16));
  } else {
    const block = await obj.read(32, 32 + hdr.mapSize);
    const runs = hdr.delta
      ? (await readDeltaMap(key, src.hash, src.length, block, n, C, src.version)).runs.filter((r) => r[2] === 0)
      : await readMap(key, src.hash, src.length, block, n);
    for (const [first, stop] of runs) {
      for (let i = first; i < stop; i++) {
        offset.set(i, pos);
        pos += C + 16; // every chunk but the last is C bytes, and the last is never referenced
      }
    }
  }
  return { obj, key, n, offset, length: src.length, hash: src.hash };
}

// Where each chunk's ciphertext is: {i, src, start, end, key, aad, last, padFrom},
// a byte range of an object with the key and AAD that open it, or
// {i, hole: true, len}. Checks the payload size (2.4, 2.5, 2.6) first. A
// delta's inherited chunk lies in its source's payload, under that payload's
// key, with the last flag 0, `aad` that payload's header hash, and the
// source's padding (plaintext offsets from `padFrom` on) to be zero (2.6).
// `fetchSource(versionHex, length)` -> a source or null: where a delta finds c/F/V.
export async function chunkLocations(opened, source, fetchSource = null) {
  const { C, L, H, mapSize } = opened;
  const P = padme(L);
  const n = chunkCount(P, C);
  const lastLen = P - (n - 1) * C;
  const plainLen = (i) => (i === n - 1 ? lastLen : C);
  const lastAad = concat(H, u64be(L));
  const own = (i, start) => ({
    i, src: source, start, end: start + plainLen(i) + 16,
    key: opened.payloadKey, aad: i === n - 1 ? lastAad : H, last: i === n - 1, padFrom: Infinity,
  });
  const locs = [];
  if (mapSize) {
    const block = await source.read(32, 32 + mapSize);
    let runs;
    let sources = [];
    if (opened.delta) {
      ({ sources, runs } = await readDeltaMap(opened.payloadKey, H, L, block, n, C, opened.version));
    } else {
      runs = (await readMap(opened.payloadKey, H, L, block, n)).map(([f, s]) => [f, s, 0]);
    }
    const stored = runs.reduce((a, [f, s, o]) => a + (o ? 0 : s - f), 0);
    if (source.size !== 32 + mapSize + (stored - 1) * (C + 16) + lastLen + 16) {
      throw authError("the payload's size does not match its chunk map");
    }
    // Each source is opened once, when its first chunk is located (2.6 steps 1-3).
    const opens = new Map();
    let pos = 32 + mapSize;
    let next = 0;
    for (const [first, stop, origin] of runs) {
      for (let i = next; i < first; i++) locs.push({ i, hole: true, len: plainLen(i) });
      if (origin) {
        if (!fetchSource) throw authError("an earlier version this file draws on cannot be fetched here");
        if (!opens.has(origin)) opens.set(origin, await openDeltaSource(sources[origin - 1], C, fetchSource));
        const so = opens.get(origin);
        for (let i = first; i < stop; i++) {
          // Step 3: references are flat; a hole or inherited chunk of the source is never followed.
          const start = so.offset.get(i);
          if (start === undefined || i >= so.n - 1) throw authError("an earlier version does not store a chunk this version names");
          locs.push({ i, src: so.obj, start, end: start + C + 16, key: so.key, aad: so.hash, last: false, padFrom: so.length - i * C });
        }
      } else {
        for (let i = first; i < stop; i++) {
          locs.push(own(i, pos));
          pos += plainLen(i) + 16;
        }
      }
      next = stop;
    }
  } else {
    if (source.size !== 32 + P + 16 * n) throw authError("the payload's size is wrong for its length");
    for (let i = 0; i < n; i++) locs.push(own(i, 32 + i * (C + 16)));
  }
  return { n, locs };
}

// 2.4: the plaintext, chunk by chunk, each piece yielded only after its tag
// verified; a piece is valid until the next one is asked for. Consecutive
// chunks of one object are read in ranged requests of at most `batch` bytes,
// each streamed: `window` chunks at a time are taken from the response into
// one reused buffer. WebCrypto copies its input when called, so the next
// window is read while the previous one decrypts, and the next request is sent
// while one is consumed. The browser reads a response ahead of the page, up to
// its whole body, so `batch` bounds that memory (two requests' worth).
export async function* decryptPayload(opened, source, { batch = 8 << 20, fetchSource = null, window = 16 } = {}) {
  const { C, L } = opened;
  const { locs } = await chunkLocations(opened, source, fetchSource);
  // Group the locations: a hole alone, or a run of adjacent chunks of one object.
  const groups = [];
  for (let k = 0; k < locs.length; ) {
    let j = k;
    if (!locs[k].hole) {
      const next = (m) => locs[m + 1];
      while (next(j) && !next(j).hole && next(j).src === locs[k].src && next(j).start === locs[j].end
             && next(j).end - locs[k].start <= batch) j++;
    }
    groups.push(locs.slice(k, j + 1));
    k = j + 1;
  }
  const openGroup = (g) => (g[0].hole ? Promise.resolve(null) : openRange(g[0].src, g[0].start, g[g.length - 1].end));
  let upcoming = groups.length ? openGroup(groups[0]) : null;
  let range = null;
  try {
    for (let gi = 0; gi < groups.length; gi++) {
      const g = groups[gi];
      range = await upcoming;
      upcoming = gi + 1 < groups.length ? openGroup(groups[gi + 1]) : null;
      upcoming?.catch(() => {}); // reported when awaited
      if (g[0].hole) {
        yield* emit(g[0].i, new Uint8Array(g[0].len));
        continue;
      }
      let pending = null; // the window being decrypted while the next one is read
      for (let w = 0; w < g.length; w += window) {
        const part = g.slice(w, w + window);
        const base = part[0].start;
        const want = part[part.length - 1].end - base;
        const data = await range.take(want);
        if (data.length !== want) throw authError("a chunk is short");
        const opening = Promise.all(part.map(({ i, start, end, key, aad, last }) => {
          const nonce = new Uint8Array(12);
          new DataView(nonce.buffer).setBigUint64(3, BigInt(i));
          nonce[11] = last ? 1 : 0;
          return aesOpen(key, nonce, data.subarray(start - base, end - base), aad);
        }));
        if (pending) yield* release(pending);
        pending = { part, opening };
      }
      if (pending) yield* release(pending);
      await range.cancel();
      range = null;
    }
  } finally {
    // Stopped early (a failed check, or the consumer quit): no download goes on.
    await range?.cancel();
    upcoming?.then((r) => r?.cancel(), () => {});
  }
  async function* release({ part, opening }) {
    const plains = await opening;
    for (let m = 0; m < part.length; m++) {
      if (!plains[m]) throw authError(`chunk ${part[m].i} does not authenticate`);
      // 2.6 step 4: an inherited chunk's bytes past its source's length are zero.
      if (plains[m].subarray(Math.max(0, part[m].padFrom)).some((x) => x)) throw authError("non-zero padding in an earlier version");
    }
    for (let m = 0; m < part.length; m++) yield* emit(part[m].i, plains[m]);
  }
  // 2.3: bytes at L and beyond are padding and must be zero.
  function* emit(i, plain) {
    const keep = Math.max(0, Math.min(plain.length, L - i * C));
    if (plain.subarray(keep).some((x) => x)) throw authError("non-zero padding");
    if (keep) yield plain.subarray(0, keep);
  }
}

// Bytes [start, end) of a source, taken in consecutive pieces: `take(n)` gives
// the next n bytes (fewer at the end), valid until the next take. A source with
// `open` streams them; any other is read whole.
async function openRange(source, start, end) {
  if (source.open) return source.open(start, end);
  let data = await source.read(start, end);
  return {
    take: async (n) => {
      const piece = data.subarray(0, n);
      data = data.subarray(piece.length);
      return piece;
    },
    cancel: async () => {},
  };
}

export function bytesSource(bytes) {
  return { size: bytes.length, read: async (s, e) => bytes.subarray(s, Math.min(e, bytes.length)) };
}

// A whole payload in memory (vectors, manifests, notices, log bodies).
// `maxLength`: a plaintext limit checked on L before any chunk is decrypted (5.3, 7.4).
// `fetchSource`: where a delta version's sources are (2.6), as for decryptPayload.
export async function decryptAll(args, payload, { maxLength = Infinity, what = "plaintext", fetchSource = null } = {}) {
  const opened = await openEnvelope({ ...args, payloadStart: payload.subarray(0, 32) });
  if (opened.L > maxLength) throw formatError(`${what} longer than ${maxLength} bytes`);
  const parts = [];
  for await (const p of decryptPayload(opened, bytesSource(payload), { fetchSource })) parts.push(p.slice());
  return { opened, plaintext: concat(...parts) };
}
