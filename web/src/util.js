// Errors and byte helpers shared by the decoder modules.

// The three failure classes of docs/format.md 6 (and 6.1), plus key file and
// store errors. `kind` is what the vector harness compares.
export class CsfsError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "format" | "authentication" | "no match" | "key" | "store"
  }
}
export const formatError = (m) => new CsfsError("format", m);
export const authError = (m) => new CsfsError("authentication", m);

export const enc = new TextEncoder();
export const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function u64be(value) {
  // value: a Number (exact below 2^53) or a BigInt.
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

export function readU64(b, off) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(off);
}

export function readU32(b, off) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off);
}

export function readU16(b, off) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint16(off);
}

export function hex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export function fromHex(s) {
  if (s.length % 2 || /[^0-9a-fA-F]/.test(s)) throw new Error("bad hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

export function equalCT(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

export async function hkdf(ikm, salt, info, length = 32) {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt, info: enc.encode(info) },
    key,
    length * 8,
  );
  return new Uint8Array(bits);
}

export function base64urlNoPad(b) {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Standard base64 with padding, strictly (7.2).
export function base64Strict(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4) {
    throw formatError("not standard base64");
  }
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

let ed25519Native;
// Ed25519 verification (3.6 step 2: RFC 8032 5.1.7, S < l, cofactorless):
// WebCrypto's Ed25519 (BoringSSL in Chromium) is exactly that check.
export async function ed25519Verify(publicKey, signature, message) {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    ed25519Native = true;
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (e) {
    if (ed25519Native === undefined && e.name === "NotSupportedError") {
      throw new CsfsError("key", "this browser has no Ed25519 in WebCrypto");
    }
    return false; // an invalid point
  }
}
