"""Signs one evidence artefact for aispm.

usage: python3 sign_evidence.py KEY.pem TENANT_ID EVIDENCE_ID KEY_ID FILE

KEY.pem is an Ed25519 private key in PKCS#8 PEM (`openssl genpkey -algorithm ed25519`);
KEY_ID is the id of the tenant's trust_root asset that registers its public key. Prints the
trust root's public_key and the event's `evidence` object as JSON.
"""
import base64
import hashlib
import json
import pathlib
import struct
import sys

from cryptography.hazmat.primitives.serialization import (
    Encoding, PublicFormat, load_pem_private_key)

DOMAIN = b"aispm/evidence/v1"


def field(b: bytes) -> bytes:
    """A field of the message: its length as 4 bytes big-endian, then its bytes."""
    return struct.pack(">I", len(b)) + b


def evidence_message(tenant_id: str, evidence_id: str, sha256: bytes) -> bytes:
    """The exact bytes an aispm evidence signature covers."""
    assert len(sha256) == 32
    return (field(DOMAIN) + field(tenant_id.encode("utf-8"))
            + field(evidence_id.encode("utf-8")) + field(sha256))


key_pem, tenant_id, evidence_id, key_id, path = sys.argv[1:6]
key = load_pem_private_key(pathlib.Path(key_pem).read_bytes(), password=None)
artefact = pathlib.Path(path)
sha256 = hashlib.sha256(artefact.read_bytes()).digest()
signature = key.sign(evidence_message(tenant_id, evidence_id, sha256))  # Ed25519PrivateKey.sign
public_key = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
print(json.dumps({
    "public_key": base64.b64encode(public_key).decode(),
    "evidence": {
        "evidence_id": evidence_id,
        "sha256": sha256.hex(),
        "uri": artefact.resolve().as_uri(),
        "signature": base64.b64encode(signature).decode(),
        "key_id": key_id,
    },
}, indent=2))
