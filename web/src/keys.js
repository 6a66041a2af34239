// Key files (docs/format.md 1.1-1.3): private key files, encrypted or not,
// public key files with their optional self-signature, and fingerprints.

import { Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { x25519 } from "@noble/curves/ed25519.js";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { sha3_256 } from "@noble/hashes/sha3.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import * as der from "./der.js";
import { CsfsError, base64urlNoPad, concat, ed25519Verify, enc, formatError, sha256 } from "./util.js";

const OID = {
  x25519: "1.3.101.110",
  ed25519: "1.3.101.112",
  ec: "1.2.840.10045.2.1",
  p256: "1.2.840.10045.3.1.7",
  mlkem768: "2.16.840.1.101.3.4.4.2",
  pbes2: "1.2.840.113549.1.5.13",
  pbkdf2: "1.2.840.113549.1.5.12",
  hmacSha256: "1.2.840.113549.2.9",
  aes256cbc: "2.16.840.1.101.3.4.1.42",
};
export const KEM = { x25519: 0x0020, p256: 0x0010, mlkem768x25519: 0x647a };
const MIN_PBKDF2_ROUNDS = 100000; // 1.2
const keyError = (m) => new CsfsError("key", m);

// 1.2: the rows of the kind table, by the algorithms of the blocks.
function kindOf(algs) {
  const s = algs.join(",");
  if (s === "x25519,ed25519") return "x25519";
  if (s === "p256,ed25519") return "p256";
  if (s === "mlkem768,x25519,ed25519") return "mlkem768x25519";
  return null;
}

function algorithmOf(algId) {
  const [o, params] = der.seq(algId, "AlgorithmIdentifier");
  const name = der.oid(o);
  if (name === OID.x25519) return "x25519";
  if (name === OID.ed25519) return "ed25519";
  if (name === OID.mlkem768) return "mlkem768";
  if (name === OID.ec && params && der.oid(params) === OID.p256) return "p256";
  throw new der.DerError(`unsupported key algorithm ${name}`);
}

// PKCS#8 PrivateKeyInfo -> {alg, secret (raw private bytes or ML-KEM seed)}.
function parsePrivateKeyInfo(bytes) {
  const items = der.seq(der.tlv(bytes), "PrivateKeyInfo");
  der.integer(items[0]);
  const alg = algorithmOf(items[1]);
  const inner = der.octets(items[2]);
  if (alg === "x25519" || alg === "ed25519") {
    const k = der.octets(der.tlv(inner));
    if (k.length !== 32) throw new der.DerError("bad key length");
    return { alg, secret: k };
  }
  if (alg === "p256") {
    const ecpk = der.seq(der.tlv(inner), "ECPrivateKey");
    const d = der.octets(ecpk[1]);
    if (d.length !== 32) throw new der.DerError("bad P-256 key length");
    return { alg, secret: d };
  }
  // ML-KEM-768 (1.2): the seed-only form, [0] IMPLICIT OCTET STRING of 64 bytes.
  const node = der.tlv(inner);
  if (node.tag !== 0x80 || node.end - node.start !== 64) {
    throw new der.DerError("ML-KEM-768 key is not in the seed-only form");
  }
  return { alg, secret: der.content(node) };
}

// EncryptedPrivateKeyInfo with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) -> PrivateKeyInfo.
async function decryptPkcs8(bytes, passphrase) {
  const [algId, data] = der.seq(der.tlv(bytes), "EncryptedPrivateKeyInfo");
  const [scheme, params] = der.seq(algId);
  if (der.oid(scheme) !== OID.pbes2) throw keyError("the key file is not PBES2-encrypted");
  const [kdf, cipher] = der.seq(params);
  const [kdfOid, kdfParams] = der.seq(kdf);
  if (der.oid(kdfOid) !== OID.pbkdf2) throw keyError("the key file does not use PBKDF2");
  const kp = der.seq(kdfParams);
  const salt = der.octets(kp[0]);
  const rounds = der.integer(kp[1]);
  let prf = kp[2];
  if (prf && prf.tag === 0x02) prf = kp[3]; // optional keyLength
  if (!prf || der.oid(der.seq(prf)[0]) !== OID.hmacSha256) {
    throw keyError("the key file does not use PBKDF2-HMAC-SHA256");
  }
  if (rounds < MIN_PBKDF2_ROUNDS) throw keyError("the key file uses too few PBKDF2 rounds");
  const [cipherOid, iv] = der.seq(cipher);
  if (der.oid(cipherOid) !== OID.aes256cbc) throw keyError("the key file does not use AES-256-CBC");
  const base = await crypto.subtle.importKey("raw", enc.encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  const kek = await crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: rounds },
    base,
    { name: "AES-CBC", length: 256 },
    false,
    ["decrypt"],
  );
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CBC", iv: der.octets(iv) }, kek, der.octets(data)));
  } catch {
    throw keyError("wrong passphrase");
  }
}

// 1.3: recipient id and fingerprint.
export async function recipientId(kemId, kemPub, edPub) {
  const id = new Uint8Array([kemId >> 8, kemId & 0xff]);
  return sha256(concat(enc.encode("csfs v1 recipient\0"), id, kemPub, edPub));
}
export async function fingerprint(kemId, kemPub, edPub) {
  return "SHA256:" + base64urlNoPad(await recipientId(kemId, kemPub, edPub));
}

const suites = new Map();
function suiteFor(kem) {
  if (!suites.has(kem.id)) {
    suites.set(kem.id, new CipherSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() }));
  }
  return suites.get(kem.id);
}

// 1.1: X-Wing (MLKEM768-X25519) decapsulation from the two component keys, as
// the spec writes it out; @hpke/core runs RFC 9180's key schedule around it.
const XWING_LABEL = new Uint8Array([0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c]);
class XWingComponentsKem {
  id = KEM.mlkem768x25519;
  secretSize = 32;
  encSize = 1120;
  publicKeySize = 1216;
  privateKeySize = 96;
  async decap(params) {
    const e = new Uint8Array(params.enc);
    if (e.length !== 1120) throw new Error("bad enc length");
    const key = params.recipientKey;
    const ctM = e.subarray(0, 1088);
    const ctX = e.subarray(1088);
    const ssM = ml_kem768.decapsulate(ctM, key.mlkemSecret);
    const ssX = x25519.getSharedSecret(key.xSecret, ctX);
    return sha3_256(concat(ssM, ssX, ctX, key.xPublic, XWING_LABEL)).buffer;
  }
  async encap() {
    throw new Error("this reader never encapsulates");
  }
}

// A private key file (1.2) -> an identity able to open stanzas (3.3, 3.4).
export async function loadIdentity(text, passphrase) {
  let blocks;
  try {
    blocks = der.pemBlocks(text);
  } catch (e) {
    throw keyError(`not a key file: ${e.message}`);
  }
  if (blocks.some((b) => b.label === "PUBLIC KEY")) {
    throw keyError("this is a public key file; pick NAME_private_key.pem");
  }
  const keyBlocks = blocks.filter((b) => b.label.endsWith("PRIVATE KEY"));
  if (keyBlocks.length === 0) throw keyError("no private key in this file");
  const encrypted = keyBlocks.map((b) => b.label === "ENCRYPTED PRIVATE KEY");
  if (encrypted.some((x) => x !== encrypted[0]) || keyBlocks.some((b) => !/^(ENCRYPTED )?PRIVATE KEY$/.test(b.label))) {
    throw keyError("the key file mixes encrypted and unencrypted blocks");
  }
  if (encrypted[0] && !passphrase) throw keyError("this key file needs its passphrase");
  const parts = [];
  for (const b of keyBlocks) {
    let info = b.der;
    try {
      if (encrypted[0]) info = await decryptPkcs8(b.der, passphrase);
      parts.push(parsePrivateKeyInfo(info));
    } catch (e) {
      if (e instanceof CsfsError) throw e;
      throw keyError(encrypted[0] ? "wrong passphrase" : `unreadable key block: ${e.message}`);
    }
  }
  const kind = kindOf(parts.map((p) => p.alg));
  if (!kind) throw keyError("not a csfs identity: " + parts.map((p) => p.alg).join(", "));
  const edSecret = parts[parts.length - 1].secret;
  const edPub = ed25519.getPublicKey(edSecret);
  let kem, recipientKey, kemPub;
  if (kind === "x25519") {
    kem = new DhkemX25519HkdfSha256();
    recipientKey = await kem.importKey("raw", parts[0].secret.slice().buffer, false);
    kemPub = x25519.getPublicKey(parts[0].secret);
  } else if (kind === "p256") {
    kem = new DhkemP256HkdfSha256();
    recipientKey = await kem.importKey("raw", parts[0].secret.slice().buffer, false);
    kemPub = p256.getPublicKey(parts[0].secret, false);
  } else {
    const { publicKey, secretKey } = ml_kem768.keygen(parts[0].secret);
    const xPublic = x25519.getPublicKey(parts[1].secret);
    kem = new XWingComponentsKem();
    recipientKey = { mlkemSecret: secretKey, xSecret: parts[1].secret, xPublic };
    kemPub = concat(publicKey, xPublic);
  }
  const kemId = KEM[kind];
  const suite = suiteFor(kem);
  return {
    kind,
    kemId,
    kemPub,
    edPub,
    fingerprint: await fingerprint(kemId, kemPub, edPub),
    open: opener(kem, suite, recipientKey),
  };
}

// 3.4: any failure of HPKE Open (an invalid enc too) means "does not open".
function opener(kem, suite, recipientKey) {
  return async (sealed, info) => {
    const encLen = kem.encSize;
    try {
      const pt = await suite.open(
        { recipientKey, enc: sealed.slice(0, encLen).buffer, info: info.slice().buffer },
        sealed.slice(encLen).buffer,
      );
      return new Uint8Array(pt);
    } catch {
      return null;
    }
  };
}

// 7.7: a share link's bare X25519 private key (32 bytes): opens stanzas, signs nothing.
export async function linkIdentity(secret) {
  const kem = new DhkemX25519HkdfSha256();
  const recipientKey = await kem.importKey("raw", secret.slice().buffer, false);
  return { kind: "x25519", kemId: KEM.x25519, open: opener(kem, suiteFor(kem), recipientKey) };
}

// 1.2: a public key file -> {kemId, kemPub, edPub, fingerprint}. Inside a member
// record (7.1) every failure is a format error, which is what this throws.
export async function parsePublicKeyFile(text, { requireSignature }) {
  let blocks;
  try {
    blocks = der.pemBlocks(text);
  } catch (e) {
    throw formatError(e.message);
  }
  const algs = [];
  const raws = [];
  const signatures = [];
  for (const b of blocks) {
    if (b.label === "PUBLIC KEY") {
      try {
        const [algId, bits] = der.seq(der.tlv(b.der), "SubjectPublicKeyInfo");
        const alg = algorithmOf(algId);
        const raw = der.bitString(bits);
        const want = { x25519: 32, ed25519: 32, p256: 65, mlkem768: 1184 }[alg];
        if (raw.length !== want || (alg === "p256" && raw[0] !== 4)) throw new der.DerError("bad public key");
        algs.push(alg);
        raws.push(raw);
      } catch (e) {
        throw formatError(`unreadable PUBLIC KEY block: ${e.message}`);
      }
    } else if (b.label === "CSFS KEY SIGNATURE") {
      signatures.push(b.der);
    } else if (b.label.includes("PRIVATE KEY")) {
      throw formatError("a public key file holding a private key");
    }
  }
  const kind = kindOf(algs);
  if (!kind) throw formatError("key file is not one of the kinds of 1.2");
  const kemId = KEM[kind];
  const kemPub = kind === "mlkem768x25519" ? concat(raws[0], raws[1]) : raws[0];
  const edPub = raws[raws.length - 1];
  if (signatures.length > 1) throw formatError("more than one CSFS KEY SIGNATURE block");
  if (signatures.length === 0 && requireSignature) throw formatError("public key without a self-signature");
  if (signatures.length === 1) {
    const rid = await recipientId(kemId, kemPub, edPub);
    const ok = await ed25519Verify(edPub, signatures[0], concat(enc.encode("csfs v1 key self-signature\0"), rid));
    if (!ok) throw formatError("self-signature does not verify");
  }
  return { kemId, kemPub, edPub, fingerprint: await fingerprint(kemId, kemPub, edPub) };
}
