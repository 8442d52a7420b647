//! Ed25519 keys and signatures. The private key is PKCS#8 PEM (`aispm-reporter keygen`); the
//! public key travels as base64 of its 32 raw bytes, the form a `trust_root` asset registers.
//!
//! The packet's `manifest.sig` is the signature over the 32 raw bytes of SHA-256
//! (`manifest.json`); the delivery evidence's signature is over the contract's evidence message
//! (`aispm_schemas::signature`: tenant, evidence id and that digest), by the same key.

use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The key that signs packets.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_key_b64())
            .finish()
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Signer {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Signer {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Loads a PKCS#8 PEM private key.
    pub fn load(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| Error::Key {
            path: path.to_owned(),
            reason: format!("not an Ed25519 PKCS#8 PEM private key ({e})"),
        })?;
        Ok(Signer { key })
    }

    /// Loads the key at `path`, or creates one there (mode 0600) if nothing is there yet.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool)> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let s = Self::generate();
        s.write_private(path)?;
        Ok((s, true))
    }

    /// Writes the private key as PKCS#8 PEM, readable by the owner only. Refuses to overwrite.
    pub fn write_private(&self, path: &Path) -> Result<()> {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::Key {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
        std::io::Write::write_all(&mut f, pem.as_bytes()).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> Result<String> {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key {
                path: Default::default(),
                reason: e.to_string(),
            })
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The private key, for the minisign signatures of [`crate::minisign`].
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key as base64 of its 32 raw bytes (a `trust_root` asset's `public_key`).
    pub fn public_key_b64(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// Base64 signature over the 32 raw bytes of `digest`.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> String {
        B64.encode(self.key.sign(digest).to_bytes())
    }

    /// Base64 evidence signature: the contract's message for (`tenant_id`, `evidence_id`,
    /// `sha256_hex`) (`aispm_schemas::signature`), as delivery evidence carries it. `None` when
    /// `sha256_hex` is not 64 lower-case hex characters.
    pub fn sign_evidence(
        &self,
        tenant_id: &str,
        evidence_id: &str,
        sha256_hex: &str,
    ) -> Option<String> {
        aispm_schemas::signature::sign_hex(&self.key, tenant_id, evidence_id, sha256_hex)
    }
}

/// Checks a base64 signature over `digest` with a base64 raw public key.
pub fn verify_digest(public_key_b64: &str, digest: &[u8; 32], signature_b64: &str) -> Result<()> {
    let key: [u8; 32] = B64
        .decode(public_key_b64.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::Verify("the public key is not 32 bytes of base64".into()))?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|e| Error::Verify(format!("the public key is not an Ed25519 point ({e})")))?;
    let sig: [u8; 64] = B64
        .decode(signature_b64.trim())
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Verify("the signature is not 64 bytes of base64".into()))?;
    key.verify(digest, &Signature::from_bytes(&sig))
        .map_err(|_| Error::Verify("the Ed25519 signature does not match".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_pem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let (s, created) = Signer::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = Signer::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(s.public_key_b64(), again.public_key_b64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(s.write_private(&path).is_err(), "never overwrites a key");
        assert!(
            s.public_pem()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );

        let digest = sha256(b"manifest");
        let sig = s.sign_digest(&digest);
        verify_digest(&s.public_key_b64(), &digest, &sig).unwrap();
        let other = sha256(b"manifesT");
        assert!(verify_digest(&s.public_key_b64(), &other, &sig).is_err());
        let stranger = Signer::generate();
        assert!(verify_digest(&stranger.public_key_b64(), &digest, &sig).is_err());
        assert!(verify_digest("bm90IGEga2V5", &digest, &sig).is_err());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
