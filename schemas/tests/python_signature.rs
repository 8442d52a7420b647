//! The Python signer that `docs/evidence-signatures.md` shows (`docs/examples/sign_evidence.py`,
//! Python's `cryptography`, so OpenSSL's Ed25519) signs exactly the bytes
//! `aispm_schemas::signature` signs, and its signatures verify here. `AISPM_PYTHON` chooses the
//! interpreter (the project venv has `cryptography`; `scripts/setup.sh`).

use aispm_schemas::SignatureState;
use aispm_schemas::signature;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("docs")
}

/// The key as PKCS#8 v1 PEM (`openssl genpkey -algorithm ed25519` writes this form; the v2
/// form, with the public key, that `SigningKey::to_pkcs8_pem` writes is refused by
/// `cryptography`'s parser).
fn pkcs8_v1_pem(key: &SigningKey) -> String {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .unwrap()
    .to_string()
}

fn python() -> String {
    std::env::var("AISPM_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn the_documented_example_is_the_script() {
    let script = std::fs::read_to_string(docs().join("examples/sign_evidence.py")).unwrap();
    let doc = std::fs::read_to_string(docs().join("evidence-signatures.md")).unwrap();
    assert!(
        doc.contains(&format!("```python\n{script}```")),
        "docs/evidence-signatures.md must show docs/examples/sign_evidence.py verbatim"
    );
}

#[test]
fn the_python_signer_agrees_with_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let pem = dir.path().join("key.pem");
    std::fs::write(&pem, pkcs8_v1_pem(&key)).unwrap();
    let public_b64 = STANDARD.encode(key.verifying_key().as_bytes());
    assert!(signature::public_key(&public_b64).is_ok());

    // The documented example (empty artefact), and one with a non-ASCII evidence id.
    for (tenant, evidence_id, content) in [
        ("acme", "ev-1", &b""[..]),
        (
            "globex.eu",
            "ev-ü/7 \u{2603}",
            &b"{\"verdict\":\"deny\"}\n"[..],
        ),
    ] {
        let artefact = dir.path().join("artefact");
        std::fs::write(&artefact, content).unwrap();
        let out = Command::new(python())
            .arg(docs().join("examples/sign_evidence.py"))
            .arg(&pem)
            .arg(tenant)
            .arg(evidence_id)
            .arg("root-1")
            .arg(&artefact)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
        assert!(
            out.status.success(),
            "sign_evidence.py failed (is `cryptography` installed? scripts/setup.sh):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ev = &v["evidence"];
        let sha256 = ev["sha256"].as_str().unwrap();
        let sig = ev["signature"].as_str().unwrap();
        assert_eq!(v["public_key"], public_b64.as_str());
        assert_eq!(ev["evidence_id"], evidence_id);
        assert_eq!(ev["key_id"], "root-1");
        // Ed25519 is deterministic: byte for byte the signature Rust makes.
        assert_eq!(
            Some(sig.to_owned()),
            signature::sign_hex(&key, tenant, evidence_id, sha256)
        );
        assert_eq!(
            signature::verify(&public_b64, tenant, evidence_id, sha256, sig),
            SignatureState::Verified
        );
        assert_eq!(
            signature::verify(&public_b64, tenant, "ev-other", sha256, sig),
            SignatureState::Invalid
        );
    }
}
