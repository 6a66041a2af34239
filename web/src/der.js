// A minimal DER reader: enough for PKCS#8, EncryptedPrivateKeyInfo (PBES2) and
// SubjectPublicKeyInfo as csfs writes them (docs/format.md 1.2). Any structure
// it does not expect throws DerError; callers turn that into a key file error.

export class DerError extends Error {}

// One TLV at `pos` -> {tag, start (of the content), end}.
export function tlv(buf, pos = 0, limit = buf.length) {
  if (pos + 2 > limit) throw new DerError("truncated DER");
  const tag = buf[pos];
  let len = buf[pos + 1];
  let start = pos + 2;
  if (len & 0x80) {
    const octets = len & 0x7f;
    if (octets === 0 || octets > 4 || start + octets > limit) throw new DerError("bad DER length");
    len = 0;
    for (let i = 0; i < octets; i++) len = len * 256 + buf[start + i];
    start += octets;
  }
  const end = start + len;
  if (end > limit) throw new DerError("DER value runs past its container");
  return { tag, start, end, buf };
}

export function content(node) {
  return node.buf.subarray(node.start, node.end);
}

// The children of a constructed value.
export function children(node) {
  const out = [];
  let pos = node.start;
  while (pos < node.end) {
    const child = tlv(node.buf, pos, node.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

export function expect(node, tag, what) {
  if (node === undefined || node.tag !== tag) throw new DerError(`expected ${what}`);
  return node;
}

export function seq(node, what = "SEQUENCE") {
  return children(expect(node, 0x30, what));
}

export function oid(node) {
  const b = content(expect(node, 0x06, "OBJECT IDENTIFIER"));
  if (b.length === 0) throw new DerError("empty OID");
  const parts = [Math.floor(b[0] / 40), b[0] % 40];
  let value = 0;
  for (let i = 1; i < b.length; i++) {
    value = value * 128 + (b[i] & 0x7f);
    if (!(b[i] & 0x80)) {
      parts.push(value);
      value = 0;
    }
  }
  return parts.join(".");
}

export function integer(node) {
  const b = content(expect(node, 0x02, "INTEGER"));
  if (b.length === 0 || b.length > 6 || b[0] & 0x80) throw new DerError("unsupported INTEGER");
  let v = 0;
  for (const x of b) v = v * 256 + x;
  return v;
}

export function octets(node) {
  return content(expect(node, 0x04, "OCTET STRING"));
}

export function bitString(node) {
  const b = content(expect(node, 0x03, "BIT STRING"));
  if (b.length === 0 || b[0] !== 0) throw new DerError("BIT STRING with unused bits");
  return b.subarray(1);
}

// PEM blocks (RFC 7468) -> [{label, der}]; text outside the blocks is ignored.
export function pemBlocks(text) {
  const out = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
  for (const m of text.matchAll(re)) {
    const b64 = m[2].replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) {
      throw new DerError(`${m[1]} block is not base64`);
    }
    out.push({ label: m[1], der: base64Decode(b64) });
  }
  return out;
}

export function base64Decode(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
