//! The validator's key and the signed result it posts.

use aispm_schemas::{
    CheckKind, CheckResult, Environment, Evidence, InputEvent, RegistryEvent, Timestamp,
    Validation, signature,
};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use std::path::Path;

/// A validator key: the Ed25519 seed and the `trust_root` id it is registered under (with
/// `scopes: ["validator"]`).
#[derive(Debug)]
pub struct ValidatorKey {
    pub key: SigningKey,
    pub key_id: String,
}

impl ValidatorKey {
    /// Reads a key file: the 32-byte Ed25519 seed in standard base64 (whitespace ignored).
    pub fn load(path: &Path, key_id: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the validator key {}", path.display()))?;
        let bytes = STANDARD
            .decode(text.trim())
            .with_context(|| format!("{}: not standard base64", path.display()))?;
        let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!(
                "{}: {} bytes; an Ed25519 seed is exactly 32",
                path.display(),
                bytes.len()
            );
        };
        Ok(ValidatorKey {
            key: SigningKey::from_bytes(&seed),
            key_id: key_id.to_owned(),
        })
    }

    /// The public key to register, in standard base64.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }
}

/// A transcript kept as evidence: where it is and its digest.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub evidence_id: String,
    pub uri: String,
    pub sha256: String,
}

impl Transcript {
    /// Writes `bytes` to `path` and describes it.
    pub fn write(path: &Path, evidence_id: &str, bytes: &[u8]) -> Result<Self> {
        std::fs::write(path, bytes)
            .with_context(|| format!("writing the transcript {}", path.display()))?;
        let path = std::fs::canonicalize(path)?;
        Ok(Transcript {
            evidence_id: evidence_id.to_owned(),
            uri: format!("file://{}", path.display()),
            sha256: hex::encode(Sha256::digest(bytes)),
        })
    }
}

/// The result of one check for one tenant, signed by `key` over the whole claim.
#[allow(clippy::too_many_arguments)]
pub fn signed_result(
    key: &ValidatorKey,
    event_id: &str,
    tenant: &str,
    check_kind: CheckKind,
    environment: Environment,
    subject: Option<&str>,
    passed: bool,
    detail: &str,
    transcript: &Transcript,
) -> Result<InputEvent> {
    let mut r = RegistryEvent {
        event_id: event_id.to_owned(),
        tenant_id: tenant.to_owned(),
        occurred_at: Timestamp::now(),
        source: "aispm-validate".into(),
        asset: None,
        validation: Some(Validation {
            check_kind,
            result: if passed {
                CheckResult::Pass
            } else {
                CheckResult::Fail
            },
            subject: subject.map(str::to_owned),
            detail: Some(detail.to_owned()),
            evidence: Some(Evidence {
                evidence_id: transcript.evidence_id.clone(),
                sha256: transcript.sha256.clone(),
                uri: transcript.uri.clone(),
                signature: None,
                key_id: None,
            }),
            environment: Some(environment),
        }),
    };
    if !signature::sign_validation(&key.key, &key.key_id, &mut r) {
        bail!("the result could not be signed (no evidence digest)");
    }
    Ok(InputEvent::Registry(r))
}
