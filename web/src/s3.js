// The store, read over S3's HTTP API from the browser. Requests are signed in
// the query string (SigV4, aws4fetch), so a GET carries no custom header and a
// Range header alone is CORS-safelisted: no preflight per request, and servers
// that do not answer preflights (moto) work too. The bucket still needs a CORS
// rule that allows this page's origin and exposes Content-Range and ETag.

import { AwsClient } from "aws4fetch";
import { CsfsError, formatError } from "./util.js";

const storeError = (m) => new CsfsError("store", m);

export class S3Store {
  constructor({ endpoint, bucket, prefix = "", accessKeyId, secretAccessKey, sessionToken, region = "us-east-1" }) {
    this.endpoint = endpoint.replace(/\/+$/, "");
    this.bucket = bucket;
    this.prefix = prefix.replace(/^\/+|\/+$/g, "");
    this.aws = new AwsClient({ accessKeyId, secretAccessKey, sessionToken: sessionToken || undefined, service: "s3", region });
    this.label = `${this.endpoint}/${bucket}/${this.prefix}`;
  }

  objectUrl(key) {
    const full = (this.prefix ? this.prefix + "/" : "") + key;
    return `${this.endpoint}/${encodeURIComponent(this.bucket)}/${full.split("/").map(encodeURIComponent).join("/")}`;
  }

  async signed(url) {
    const req = await this.aws.sign(url, { method: "GET", aws: { signQuery: true } });
    return req.url;
  }

  async fetch(url, init = {}) {
    try {
      return await fetch(await this.signed(url), { ...init, cache: "no-store" });
    } catch {
      throw storeError(await this.unreadable());
    }
  }

  // Why a signed request's answer could not be read: the store is down, its
  // CORS rule does not allow this page, or it refused the signature without
  // CORS headers (Ceph RGW does). An unsigned request tells the last apart:
  // where the rule allows this page, even its refusal is readable.
  async unreadable() {
    try {
      await fetch(`${this.endpoint}/${encodeURIComponent(this.bucket)}?list-type=2&max-keys=0`, { cache: "no-store" });
      return `the store at ${this.endpoint} refused this page's signed request: check the access key, the secret and the session token`;
    } catch {
      return `cannot reach ${this.endpoint}: the server is down or the bucket's CORS rule does not allow ${location.origin}`;
    }
  }

  static async failure(res, what) {
    const text = await res.text().catch(() => "");
    const code = /<Code>([^<]+)<\/Code>/.exec(text)?.[1] ?? `HTTP ${res.status}`;
    return storeError(`the store refused to read ${what} (${code})`);
  }

  // The whole object, reading at most `max` + 1 bytes (5: reads are bounded);
  // null when it does not exist.
  async get(key, max) {
    const res = await this.fetch(this.objectUrl(key), { headers: { Range: `bytes=0-${max}` } });
    if (res.status === 404) return null;
    if (res.status === 416) return new Uint8Array(0); // an empty object
    if (!res.ok) throw await S3Store.failure(res, key);
    const body = await readBounded(res, max + 1);
    if (body.length > max) throw formatError(`${key} is larger than any valid object of its kind`);
    return body;
  }

  // A byte source over one object ({size, read}); size from Content-Range.
  async source(key, max) {
    const res = await this.fetch(this.objectUrl(key), { headers: { Range: "bytes=0-31" } });
    if (res.status === 404) return null;
    if (!res.ok && res.status !== 416) throw await S3Store.failure(res, key);
    const range = res.headers.get("Content-Range");
    const m = /\/(\d+)$/.exec(range ?? "");
    let size;
    if (m) size = Number(m[1]);
    else if (res.status === 416 || res.status === 200) size = Number(res.headers.get("Content-Length") ?? NaN);
    await res.body?.cancel();
    if (!Number.isFinite(size)) throw storeError("the store hides Content-Range: add it to the CORS rule's ExposeHeaders");
    if (size > max) throw formatError(`${key} is larger than any valid object of its kind`);
    const read = async (start, end) => {
      if (end <= start) return new Uint8Array(0);
      const r = await this.fetch(this.objectUrl(key), { headers: { Range: `bytes=${start}-${end - 1}` } });
      if (r.status === 416) return new Uint8Array(0);
      if (!r.ok) throw await S3Store.failure(r, key);
      return readBounded(r, end - start);
    };
    const open = async (start, end) => {
      const r = await this.fetch(this.objectUrl(key), { headers: { Range: `bytes=${start}-${end - 1}` } });
      if (!r.ok) throw await S3Store.failure(r, key);
      return rangeReader(r, end - start);
    };
    return { size, read, open };
  }

  // Keys under `sub` (relative to the vault prefix), by ListObjectsV2.
  async list(sub) {
    const keys = [];
    let token = null;
    const base = this.prefix ? this.prefix + "/" : "";
    do {
      const q = new URLSearchParams({ "list-type": "2", prefix: base + sub });
      if (token) q.set("continuation-token", token);
      const res = await this.fetch(`${this.endpoint}/${encodeURIComponent(this.bucket)}?${q}`);
      if (!res.ok) throw await S3Store.failure(res, `the list of ${sub}`);
      const xml = new DOMParser().parseFromString(await res.text(), "application/xml");
      for (const c of xml.getElementsByTagName("Contents")) {
        keys.push(c.getElementsByTagName("Key")[0].textContent.slice(base.length));
      }
      token = xml.getElementsByTagName("IsTruncated")[0]?.textContent === "true"
        ? xml.getElementsByTagName("NextContinuationToken")[0]?.textContent
        : null;
    } while (token);
    return keys;
  }
}

// A response body, stopping after `limit` bytes (a server that ignores the
// Range header, or an encoding that inflates, costs no more memory than the
// range). Read straight into place where the body is a byte stream (BYOB), into
// a buffer of the declared length, grown only if the body runs past it (so a
// 2 MiB limit on a small envelope allocates the envelope's size); chunk by
// chunk, copied once, elsewhere.
export async function readBounded(res, limit) {
  let byob = null;
  try {
    byob = res.body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream here
  }
  if (byob) {
    const declared = res.headers.get("Content-Length");
    let buf = new ArrayBuffer(Math.max(1, Math.min(limit, declared === null ? 1 << 16 : Number(declared) || 0)));
    let n = 0;
    while (n < limit) {
      if (n === buf.byteLength) {
        // Full: grow only if the body has more (a one-byte read tells).
        const probe = await byob.read(new Uint8Array(1));
        if (probe.done) break;
        const grown = new Uint8Array(Math.min(limit, 2 * n));
        grown.set(new Uint8Array(buf));
        grown[n++] = probe.value[0];
        buf = grown.buffer;
        continue;
      }
      const { done, value } = await byob.read(new Uint8Array(buf, n, buf.byteLength - n));
      if (value) {
        buf = value.buffer; // the view's buffer comes back, transferred
        n += value.byteLength;
      }
      if (done) break;
    }
    if (n >= limit) await byob.cancel();
    const out = new Uint8Array(buf, 0, n);
    return n === buf.byteLength ? out : out.slice();
  }
  const reader = res.body.getReader();
  const out = new Uint8Array(limit);
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const take = Math.min(value.length, limit - n);
    out.set(value.subarray(0, take), n);
    n += take;
    if (n >= limit) {
      await reader.cancel();
      break;
    }
  }
  return n === limit ? out : out.slice(0, n);
}

// A ranged response taken in consecutive pieces (decryptPayload's openRange):
// `take(n)` reads the next n bytes of at most `length` into one buffer that is
// reused, so the page holds one piece however long the range. (Chromium still
// reads the body ahead of the page, up to all of it: decryptPayload keeps
// ranges small for that.) Read in place where the body is a byte stream
// (BYOB: no buffer per network read either), copied chunk by chunk elsewhere.
export function rangeReader(res, length) {
  let byob = null;
  try {
    byob = res.body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream here
  }
  const reader = byob ?? res.body.getReader();
  let buf = new ArrayBuffer(0);
  let left = length;
  let rest = new Uint8Array(0); // the default reader: what the last chunk had beyond a piece
  const cancel = async () => {
    left = 0;
    await reader.cancel().catch(() => {});
  };
  const fill = async (n) => {
    if (buf.byteLength < n) buf = new ArrayBuffer(n);
    let got = 0;
    if (byob) {
      while (got < n) {
        const { done, value } = await byob.read(new Uint8Array(buf, got, n - got));
        if (value) {
          buf = value.buffer; // the view's buffer comes back, transferred
          got += value.byteLength;
        }
        if (done) break;
      }
      return got;
    }
    const out = new Uint8Array(buf, 0, n);
    while (got < n) {
      if (!rest.length) {
        const { done, value } = await reader.read();
        if (done) break;
        rest = value;
      }
      const k = Math.min(rest.length, n - got);
      out.set(rest.subarray(0, k), got);
      rest = rest.subarray(k);
      got += k;
    }
    return got;
  };
  const take = async (want) => {
    const n = Math.min(want, left);
    let got;
    try {
      got = await fill(n);
    } catch {
      await cancel();
      throw storeError("the connection to the store broke while reading the file; try again");
    }
    left -= got;
    // The whole range is taken, or the body ended short: a server that
    // ignores Range sends no more than this.
    if (!left || got < n) await cancel();
    return new Uint8Array(buf, 0, got);
  };
  return { take, cancel };
}
