#!/usr/bin/env python3
"""The seed workflow, end to end, through the csfs library.

1. generate ECC key pairs locally (sender and recipient, PEM files)
2. encrypt a file under a fresh random AES-256 key, wrapped to the recipient
   with an ephemeral ECDH + HKDF key exchange (HPKE) in a sidecar envelope
3. upload the ciphertext and the envelope to S3
4. download both as the recipient
5. decrypt with the recipient's private key and compare

Usage: scripts/test_workflow.py [--endpoint-url URL] [--bucket NAME]
Without --endpoint-url (or AWS_ENDPOINT_URL) it starts moto's S3 server on
127.0.0.1 and uses dummy credentials.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from csfs import decrypt_file, encrypt_file, generate_identity, load_identity, load_recipient  # noqa: E402
from csfs.crypto import save_identity  # noqa: E402
from csfs.store import open_store  # noqa: E402


def step(n: int, text: str) -> None:
    print(f"[{n}/5] {text}", flush=True)


def run(endpoint: str, bucket: str, work: str) -> None:
    passphrase = b"demo passphrase"
    step(1, "generating key pairs (X25519 + Ed25519) for the sender and the recipient")
    keys = os.path.join(work, "keys")
    save_identity(generate_identity(), keys, "sender", passphrase)
    priv, pub = save_identity(generate_identity(), keys, "recipient", passphrase)
    for name in sorted(os.listdir(keys)):
        print(f"      {name}")

    step(2, "encrypting report.pdf with a fresh AES-256 key, wrapped to the recipient")
    src = os.path.join(work, "report.pdf")
    with open(src, "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    sender = load_identity(os.path.join(keys, "sender_private_key.pem"), passphrase)
    payload, envelope = encrypt_file(src, [load_recipient(pub)], signer=sender)
    print(f"      {os.path.basename(payload)} ({os.path.getsize(payload)} bytes), "
          f"{os.path.basename(envelope)} ({os.path.getsize(envelope)} bytes)")

    step(3, f"uploading both to s3://{bucket}/workflow/ at {endpoint}")
    store = open_store(f"s3://{bucket}/workflow", endpoint_url=endpoint)
    store.put_file("report.pdf.enc", payload, if_none_match=True)
    store.put_file("report.pdf.key.enc", envelope, if_none_match=True)
    for info in store.list(""):
        print(f"      {info.key} {info.size} bytes")

    step(4, "downloading as the recipient")
    inbox = os.path.join(work, "inbox")
    os.makedirs(inbox)
    store.get_to_file("report.pdf.enc", os.path.join(inbox, "report.pdf.enc"))
    store.get_to_file("report.pdf.key.enc", os.path.join(inbox, "report.pdf.key.enc"))

    step(5, "decrypting with the recipient's private key and comparing")
    recipient = load_identity(priv, passphrase)
    sender_key = load_recipient(os.path.join(keys, "sender_public_key.pem")).verify_key_bytes
    out, env = decrypt_file(os.path.join(inbox, "report.pdf.enc"), recipient,
                            allowed_signers={sender_key})
    if not filecmp.cmp(src, out, shallow=False):
        raise SystemExit("workflow: FAILED: decrypted file differs from the original")
    print(f"      {os.path.basename(out)}: {env.length} bytes, identical, signed by the sender")
    print("workflow: OK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    parser.add_argument("--bucket", default=f"csfs-workflow-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    server = None
    endpoint = args.endpoint_url
    if not endpoint:
        from tests.servers import DUMMY_ENV, make_bucket, start_moto_server

        os.environ.update(DUMMY_ENV)
        server = start_moto_server()
        endpoint = server.endpoint_url
        print(f"started moto S3 server at {endpoint}")
        make_bucket(endpoint, args.bucket)
    try:
        with tempfile.TemporaryDirectory(prefix="csfs-workflow-") as work:
            run(endpoint, args.bucket, work)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
