//! The packet signing keys and the keys a verifier pins.
//!
//! **Rotation.** The reporter signs with its current key (`--signing-key`) and publishes the
//! current and previous public keys (`--previous-signing-key`, repeatable), so packets signed
//! before a rotation still verify for whoever pinned the key that signed them:
//!
//! - `GET /v1/signing-keys` (see [`crate::api`]) and `<out-dir>/signing-keys.json`: the
//!   document of [`KeyRing::document`];
//! - `<out-dir>/aispm-reporter.pub`: the current key as a minisign public key file.
//!
//! A previous key is only ever used to publish its public key: the reporter never signs with it,
//! so its private key need not stay on the host ([`load_public`] takes a public key file too).
//!
//! **Pins.** [`pin`] and [`keys_file`] read the keys a verifier trusts. Nothing here reads a
//! key from a packet.

use crate::minisign::PublicKey;
use crate::sign::Signer;
use crate::{Error, Result};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` of `signing-keys.json`.
pub const KEYS_FORMAT: &str = "aispm.signing-keys.v1";
/// The published keys document, in the packet directory.
pub const KEYS_FILE: &str = "signing-keys.json";
/// The current public key as a minisign public key file, in the packet directory.
pub const PUBLIC_KEY_FILE: &str = "aispm-reporter.pub";

/// The current signing key and the previous public keys.
#[derive(Debug)]
pub struct KeyRing {
    current: Signer,
    current_public: PublicKey,
    previous: Vec<PublicKey>,
}

/// One published key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// The minisign key id (16 hex digits), the key's fingerprint.
    pub key_id: String,
    /// `current` (signs new packets) or `previous` (signed earlier packets).
    pub status: String,
    /// The minisign public key string (`minisign -P <this>`).
    pub minisign_public_key: String,
    /// Base64 of the 32 raw Ed25519 bytes (the form a `trust_root` asset registers).
    pub ed25519_public_key: String,
}

/// `GET /v1/signing-keys` and `signing-keys.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysDocument {
    pub format: String,
    pub algorithm: String,
    /// The key id of the current key.
    pub current: String,
    /// The current key first, then the previous keys.
    pub keys: Vec<PublishedKey>,
}

impl KeyRing {
    /// The ring of `current` and `previous` (a previous key equal to the current one, or given
    /// twice, is listed once).
    pub fn new(current: Signer, previous: Vec<PublicKey>) -> Self {
        let current_public = PublicKey::new(current.verifying_key());
        let mut kept: Vec<PublicKey> = Vec::with_capacity(previous.len());
        for p in previous {
            if p != current_public && !kept.contains(&p) {
                kept.push(p);
            }
        }
        KeyRing {
            current,
            current_public,
            previous: kept,
        }
    }

    /// The key that signs.
    pub fn current(&self) -> &Signer {
        &self.current
    }

    pub fn current_public(&self) -> &PublicKey {
        &self.current_public
    }

    /// Every published key, the current one first.
    pub fn all(&self) -> Vec<PublicKey> {
        std::iter::once(self.current_public.clone())
            .chain(self.previous.iter().cloned())
            .collect()
    }

    pub fn document(&self) -> KeysDocument {
        let entry = |k: &PublicKey, status: &str| PublishedKey {
            key_id: k.key_id.to_string(),
            status: status.to_owned(),
            minisign_public_key: k.encode(),
            ed25519_public_key: k.ed25519_base64(),
        };
        KeysDocument {
            format: KEYS_FORMAT.to_owned(),
            algorithm: "minisign: Ed25519 over BLAKE2b-512 of the file (\"ED\")".to_owned(),
            current: self.current_public.key_id.to_string(),
            keys: std::iter::once(entry(&self.current_public, "current"))
                .chain(self.previous.iter().map(|k| entry(k, "previous")))
                .collect(),
        }
    }

    /// Writes `signing-keys.json` and `aispm-reporter.pub` into `dir`, each atomically.
    pub fn publish(&self, dir: &Path) -> Result<()> {
        crate::store::write_atomic(
            &dir.join(KEYS_FILE),
            &serde_json::to_vec_pretty(&self.document())?,
        )?;
        crate::store::write_atomic(
            &dir.join(PUBLIC_KEY_FILE),
            self.current_public.file().as_bytes(),
        )
    }
}

/// A previous key's public key from `path`: a minisign public key file, an Ed25519 public key
/// (SubjectPublicKeyInfo PEM) or private key (PKCS#8 PEM, of which only the public half is
/// kept), or base64 of the 32 raw bytes.
pub fn load_public(path: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Key {
        path: path.to_owned(),
        reason,
    };
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        let key = SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| bad(format!("not an Ed25519 PKCS#8 PEM private key ({e})")))?;
        return Ok(PublicKey::new(key.verifying_key()));
    }
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        let key = VerifyingKey::from_public_key_pem(&text)
            .map_err(|e| bad(format!("not an Ed25519 public key ({e})")))?;
        if key.is_weak() {
            return Err(bad("a small-order public key".into()));
        }
        return Ok(PublicKey::new(key));
    }
    PublicKey::parse(&text).map_err(|e| bad(e.to_string()))
}

/// One pinned key as given on the command line: a minisign public key string, a base64 raw
/// Ed25519 key, or the path of a file holding one (see [`load_public`]).
pub fn pin(arg: &str) -> Result<PublicKey> {
    let arg = arg.trim();
    let path = Path::new(arg);
    if path.is_file() {
        return load_public(path);
    }
    PublicKey::parse(arg).map_err(|e| {
        Error::Verify(format!(
            "--public-key {arg:?} is neither a file nor a public key: {e}"
        ))
    })
}

/// The keys of a keys file: `signing-keys.json` as the reporter publishes it (every key it
/// lists), or text with one key per line (minisign public key strings or base64 raw keys;
/// blank lines, `#` comments and `untrusted comment:` lines are skipped, so minisign `.pub`
/// files can be concatenated).
pub fn keys_file(path: &Path) -> Result<Vec<PublicKey>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Key {
        path: path.to_owned(),
        reason,
    };
    let keys = if text.trim_start().starts_with('{') {
        let doc: KeysDocument = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a {KEYS_FORMAT} document ({e})")))?;
        if doc.format != KEYS_FORMAT {
            return Err(bad(format!("format {}, not {KEYS_FORMAT}", doc.format)));
        }
        doc.keys
            .iter()
            .map(|k| {
                let key = PublicKey::parse(&k.minisign_public_key)
                    .map_err(|e| bad(format!("key {}: {e}", k.key_id)))?;
                if key.key_id.to_string() != k.key_id {
                    return Err(bad(format!(
                        "key {} is listed with the id of another key ({})",
                        k.key_id, key.key_id
                    )));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        text.lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| {
                !(l.is_empty() || l.starts_with('#') || l.starts_with("untrusted comment:"))
            })
            .map(|(i, l)| PublicKey::parse(l).map_err(|e| bad(format!("line {}: {e}", i + 1))))
            .collect::<Result<Vec<_>>>()?
    };
    if keys.is_empty() {
        return Err(bad("no keys in the file".into()));
    }
    Ok(keys)
}

/// The key ids of `keys`, for messages.
pub fn ids(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|k| k.key_id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_publishes_current_and_previous() {
        let dir = tempfile::tempdir().unwrap();
        let old = Signer::generate();
        let old_pem = dir.path().join("old.pem");
        old.write_private(&old_pem).unwrap();
        let old_public = load_public(&old_pem).unwrap();
        let current = Signer::generate();
        let current_public = PublicKey::new(current.verifying_key());
        let ring = KeyRing::new(
            current,
            vec![
                old_public.clone(),
                old_public.clone(),
                current_public.clone(),
            ],
        );
        assert_eq!(ring.all(), [current_public.clone(), old_public.clone()]);
        let doc = ring.document();
        assert_eq!(doc.current, current_public.key_id.to_string());
        assert_eq!(
            doc.keys
                .iter()
                .map(|k| k.status.as_str())
                .collect::<Vec<_>>(),
            ["current", "previous"]
        );
        ring.publish(dir.path()).unwrap();
        // The published files are pins a verifier can use.
        assert_eq!(
            keys_file(&dir.path().join(KEYS_FILE)).unwrap(),
            [current_public.clone(), old_public.clone()]
        );
        let pub_file = dir.path().join(PUBLIC_KEY_FILE);
        assert_eq!(
            keys_file(&pub_file).unwrap(),
            std::slice::from_ref(&current_public)
        );
        assert_eq!(
            pin(&pub_file.display().to_string()).unwrap(),
            current_public
        );
        assert_eq!(pin(&current_public.encode()).unwrap(), current_public);
        assert_eq!(pin(&old.public_key_b64()).unwrap(), old_public);
        // A public key PEM is a previous key too.
        let spki = dir.path().join("old.spki.pem");
        std::fs::write(&spki, old.public_pem().unwrap()).unwrap();
        assert_eq!(load_public(&spki).unwrap(), old_public);

        // Concatenated .pub files, with comments.
        let both = dir.path().join("trusted.keys");
        std::fs::write(
            &both,
            format!(
                "# acme's pinned reporter keys\n{}\n{}",
                current_public.file(),
                old_public.file()
            ),
        )
        .unwrap();
        assert_eq!(keys_file(&both).unwrap().len(), 2);
        std::fs::write(&both, "# nothing\n").unwrap();
        assert!(keys_file(&both).is_err());
        std::fs::write(&both, "RWQ-not-a-key\n").unwrap();
        assert!(keys_file(&both).is_err());
        assert!(pin("no such key").is_err());
    }
}
