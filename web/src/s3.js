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
      throw storeError(
        `cannot reach ${this.endpoint}: the server is down or the bucket's CORS rule does not allow ${location.origin}`,
      );
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
    return { size, read };
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
// range). Read straight into place where the body is a byte stream (BYOB): no
// per-chunk buffers to copy and collect, which was most of the page's memory
// while saving a large file; chunk by chunk, copied once, elsewhere.
export async function readBounded(res, limit) {
  let byob = null;
  try {
    byob = res.body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream here
  }
  if (byob) {
    let buf = new ArrayBuffer(limit);
    let n = 0;
    while (n < limit) {
      const { done, value } = await byob.read(new Uint8Array(buf, n, limit - n));
      if (value) {
        buf = value.buffer; // the view's buffer comes back, transferred
        n += value.byteLength;
      }
      if (done) break;
    }
    if (n >= limit) await byob.cancel();
    const out = new Uint8Array(buf, 0, n);
    return n === limit ? out : out.slice();
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
