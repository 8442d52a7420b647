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
use std::path::{Path, PathBuf};

/// The flags every validator takes: its key, the stages it validates, and ingest.
#[derive(Debug, Clone, clap::Args)]
pub struct SignerArgs {
    /// The validator key: a file holding the 32-byte Ed25519 seed in base64.
    #[arg(long, env = "AISPM_VALIDATOR_KEY_FILE")]
    pub key: PathBuf,

    /// The `trust_root` id the key is registered under (with `scopes: ["validator"]`).
    #[arg(long, env = "AISPM_VALIDATOR_KEY_ID")]
    pub key_id: String,

    /// The environments (stages) the checked system serves: one signed result per environment
    /// (and tenant), each counting for its stage only.
    #[arg(long, value_delimiter = ',', default_value = "production")]
    pub environments: Vec<String>,

    /// Ingest's HTTP API, where the results are posted.
    #[arg(
        long,
        env = "AISPM_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub ingest: String,

    #[command(flatten)]
    pub tls: aispm_runtime::tls::ClientTlsArgs,
}

impl SignerArgs {
    /// An HTTP client for aispm's APIs (trusting `--ca-cert`), with `timeout` per request.
    pub fn http_client(&self, timeout: std::time::Duration) -> Result<reqwest::Client> {
        Ok(self.tls.client_builder()?.timeout(timeout).build()?)
    }

    /// The key and the environments.
    pub fn load(&self) -> Result<(ValidatorKey, Vec<Environment>)> {
        Ok((
            ValidatorKey::load(&self.key, &self.key_id)?,
            environments(&self.environments)?,
        ))
    }
}

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
        // Evidence: durable before its digest is published.
        aispm_runtime::fs::write_atomic(path, bytes)
            .with_context(|| format!("writing the transcript {}", path.display()))?;
        let path = std::fs::canonicalize(path)?;
        Ok(Self::describe(&path, evidence_id, bytes))
    }

    /// Describes `bytes`, already written at `path`.
    pub fn describe(path: &Path, evidence_id: &str, bytes: &[u8]) -> Self {
        Transcript {
            evidence_id: evidence_id.to_owned(),
            uri: format!("file://{}", path.display()),
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// What a validator claims: one check, for one tenant and environment.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The validator's name (the event's `source`).
    pub source: &'a str,
    /// Deterministic per run, so a repost is applied once.
    pub event_id: String,
    pub tenant: &'a str,
    pub check_kind: CheckKind,
    pub environment: Environment,
    pub subject: Option<&'a str>,
    pub passed: bool,
    pub detail: String,
    /// When the check ran (the event's `occurred_at`).
    pub at: Timestamp,
}

/// The result `claim` describes, with `transcript` as its evidence, signed by `key` over the
/// whole claim and the transcript's digest.
pub fn signed_result(
    key: &ValidatorKey,
    claim: &Claim<'_>,
    transcript: &Transcript,
) -> Result<RegistryEvent> {
    let mut r = RegistryEvent {
        event_id: claim.event_id.clone(),
        tenant_id: claim.tenant.to_owned(),
        occurred_at: claim.at,
        source: claim.source.to_owned(),
        asset: None,
        validation: Some(Validation {
            check_kind: claim.check_kind,
            result: if claim.passed {
                CheckResult::Pass
            } else {
                CheckResult::Fail
            },
            subject: claim.subject.map(str::to_owned),
            detail: Some(claim.detail.clone()),
            evidence: Some(Evidence {
                evidence_id: transcript.evidence_id.clone(),
                sha256: transcript.sha256.clone(),
                uri: transcript.uri.clone(),
                signature: None,
                key_id: None,
            }),
            environment: Some(claim.environment),
        }),
    };
    if !signature::sign_validation(&key.key, &key.key_id, &mut r) {
        bail!("the result could not be signed (no evidence digest)");
    }
    Ok(r)
}

/// Parses `--environments`.
pub fn environments(names: &[String]) -> Result<Vec<Environment>> {
    if names.is_empty() {
        bail!("--environments: name at least one environment");
    }
    names
        .iter()
        .map(|e| e.parse::<Environment>())
        .collect::<Result<_, String>>()
        .map_err(|e| anyhow::anyhow!("--environments: {e}"))
}

/// POSTs one event to ingest's `/v1/events` with `token`; fails on anything but 202.
pub async fn post(
    http: &reqwest::Client,
    ingest: &str,
    token: &str,
    event: &InputEvent,
) -> Result<()> {
    let url = format!("{}/v1/events", ingest.trim_end_matches('/'));
    let r = http
        .post(&url)
        .bearer_auth(token)
        .json(&event.to_json())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = r.status().as_u16();
    if status != 202 {
        let body = r.text().await.unwrap_or_default();
        bail!("POST {url} answered {status}: {body}");
    }
    Ok(())
}
