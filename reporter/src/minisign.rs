//! Signatures and public keys in minisign's format
//! (<https://jedisct1.github.io/minisign/>), so that Debian's `minisign -V` (or any other
//! minisign implementation) checks a packet without aispm.
//!
//! A signature file (`<file>.minisig`) is four lines:
//!
//! ```text
//! untrusted comment: <free text, not signed>
//! base64( "ED" | key id (8 bytes) | Ed25519 signature (64 bytes) over BLAKE2b-512(file) )
//! trusted comment: <one line, signed>
//! base64( Ed25519 signature (64 bytes) over signature (64 bytes) | trusted comment bytes )
//! ```
//!
//! `"ED"` is minisign's prehashed algorithm (BLAKE2b-512, 64-byte output, no key), the one
//! minisign uses by default since 0.11; `"Ed"` (the legacy one, the file itself signed) is
//! accepted when verifying. A public key is `untrusted comment: ...` and
//! `base64( "Ed" | key id | 32-byte Ed25519 public key )`; the second line alone is the string
//! `minisign -P` takes.
//!
//! **Key ids.** minisign picks a key id at random when it makes a key. The reporter's key is an
//! Ed25519 key in PKCS#8 (`aispm-reporter keygen`), so its key id is derived from the public key:
//! the first 8 bytes of SHA-256 of the 32 raw public key bytes. Like minisign, we show a key id
//! as those 8 bytes read as a little-endian integer, in 16 upper-case hex digits (`%016X`); this
//! is the key's fingerprint in mails, logs, `signing-keys.json` and the public key file's
//! comment.
//!
//! Verification takes the trusted keys as an argument and never a key from the signed data.
//! Signatures are checked strictly (`verify_strict`: no small-order keys, no malleable
//! signatures), and a key with a small-order point is refused when parsed.

use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Blake2b512;
use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The first line of a signature or public key file.
pub const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
/// The third line of a signature file.
pub const TRUSTED_PREFIX: &str = "trusted comment: ";
/// minisign's longest comment (`COMMENTMAXBYTES`).
pub const COMMENT_MAX: usize = 1024;

const ALG_PREHASHED: [u8; 2] = *b"ED";
const ALG_LEGACY: [u8; 2] = *b"Ed";
const PUBLIC_KEY_BYTES: usize = 2 + 8 + 32;
const SIGNATURE_BYTES: usize = 2 + 8 + 64;

/// A minisign key id: 8 bytes, shown as minisign shows it (`%016X` of the little-endian u64).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The key id of an Ed25519 public key: the first 8 bytes of SHA-256 of its 32 bytes.
    pub fn derive(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() != 16 {
            return Err(Error::Verify(format!(
                "a key id is 16 hex digits, not {s:?}"
            )));
        }
        let n = u64::from_str_radix(s, 16)
            .map_err(|_| Error::Verify(format!("a key id is 16 hex digits, not {s:?}")))?;
        Ok(KeyId(n.to_le_bytes()))
    }
}

/// A minisign public key: a key id and an Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.key_id, self.encode())
    }
}

fn checked_key(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|e| Error::Verify(format!("the public key is not an Ed25519 point ({e})")))?;
    if key.is_weak() {
        return Err(Error::Verify(
            "the public key is a small-order point, which anyone can sign for".into(),
        ));
    }
    Ok(key)
}

impl PublicKey {
    /// The public key of an Ed25519 key, with its derived key id ([`KeyId::derive`]).
    pub fn new(key: VerifyingKey) -> Self {
        PublicKey {
            key_id: KeyId::derive(&key),
            key,
        }
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The 32 raw public key bytes in base64 (the form a `trust_root` asset registers).
    pub fn ed25519_base64(&self) -> String {
        B64.encode(self.key.as_bytes())
    }

    /// The public key string, `base64("Ed" | key id | key)`: what `minisign -P` takes.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(PUBLIC_KEY_BYTES);
        b.extend_from_slice(&ALG_LEGACY);
        b.extend_from_slice(&self.key_id.0);
        b.extend_from_slice(self.key.as_bytes());
        B64.encode(b)
    }

    /// The public key file (`minisign -p <file>`).
    pub fn file(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.key_id,
            self.encode()
        )
    }

    /// Parses one public key: a minisign public key file (its untrusted comment line, then the
    /// key), a minisign public key string, or base64 of the 32 raw Ed25519 bytes (a
    /// `trust_root`'s `public_key`; its key id is then derived).
    pub fn parse(text: &str) -> Result<Self> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let key = match lines.as_slice() {
            [key] => key,
            [comment, key] if comment.starts_with(UNTRUSTED_PREFIX.trim_end()) => key,
            _ => {
                return Err(Error::Verify(
                    "a public key is one line of base64, optionally after an 'untrusted comment:' line"
                        .into(),
                ));
            }
        };
        Self::parse_line(key)
    }

    fn parse_line(line: &str) -> Result<Self> {
        let bytes = B64
            .decode(line.trim())
            .map_err(|_| Error::Verify(format!("the public key {line:?} is not base64")))?;
        match bytes.len() {
            PUBLIC_KEY_BYTES => {
                if bytes[..2] != ALG_LEGACY {
                    return Err(Error::Verify(format!(
                        "the public key's algorithm is {:?}, not minisign's \"Ed\"",
                        String::from_utf8_lossy(&bytes[..2])
                    )));
                }
                let mut id = [0u8; 8];
                id.copy_from_slice(&bytes[2..10]);
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes[10..]);
                Ok(PublicKey {
                    key_id: KeyId(id),
                    key: checked_key(&key)?,
                })
            }
            32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Ok(PublicKey::new(checked_key(&key)?))
            }
            n => Err(Error::Verify(format!(
                "the public key is {n} bytes; a minisign public key is {PUBLIC_KEY_BYTES} (\"Ed\", key id, key), a raw Ed25519 key 32"
            ))),
        }
    }
}

/// Which message the signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `"ED"`: BLAKE2b-512 of the file.
    Prehashed,
    /// `"Ed"`: the file itself.
    Legacy,
}

/// A parsed signature file.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: Algorithm,
    pub key_id: KeyId,
    signature: [u8; 64],
    pub untrusted_comment: String,
    pub trusted_comment: String,
    global_signature: [u8; 64],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("trusted_comment", &self.trusted_comment)
            .finish()
    }
}

fn comment_ok(what: &str, c: &str) -> Result<()> {
    if c.contains(['\r', '\n']) || c.len() > COMMENT_MAX {
        return Err(Error::Config(format!(
            "a minisign {what} is one line of at most {COMMENT_MAX} bytes"
        )));
    }
    Ok(())
}

fn sixty_four(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(bytes);
    out
}

impl Signature {
    /// Parses a signature file, strictly: four lines (the last newline optional) with the two
    /// comment prefixes.
    pub fn parse(text: &str) -> Result<Self> {
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<&str> = body
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        let [untrusted, sig, trusted, global] = lines.as_slice() else {
            return Err(Error::Verify(format!(
                "a minisign signature has 4 lines, this one {}",
                lines.len()
            )));
        };
        let untrusted_comment = untrusted.strip_prefix(UNTRUSTED_PREFIX).ok_or_else(|| {
            Error::Verify("the signature's first line is not 'untrusted comment: ...'".into())
        })?;
        let trusted_comment = trusted.strip_prefix(TRUSTED_PREFIX).ok_or_else(|| {
            Error::Verify("the signature's third line is not 'trusted comment: ...'".into())
        })?;
        if trusted_comment.len() > COMMENT_MAX {
            return Err(Error::Verify("the trusted comment is too long".into()));
        }
        let sig = B64
            .decode(sig.trim())
            .map_err(|_| Error::Verify("the signature line is not base64".into()))?;
        if sig.len() != SIGNATURE_BYTES {
            return Err(Error::Verify(format!(
                "the signature is {} bytes, not {SIGNATURE_BYTES}",
                sig.len()
            )));
        }
        let algorithm = match [sig[0], sig[1]] {
            ALG_PREHASHED => Algorithm::Prehashed,
            ALG_LEGACY => Algorithm::Legacy,
            other => {
                return Err(Error::Verify(format!(
                    "unsupported signature algorithm {:?}",
                    String::from_utf8_lossy(&other)
                )));
            }
        };
        let global = B64
            .decode(global.trim())
            .map_err(|_| Error::Verify("the trusted comment's signature is not base64".into()))?;
        if global.len() != 64 {
            return Err(Error::Verify(format!(
                "the trusted comment's signature is {} bytes, not 64",
                global.len()
            )));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&sig[2..10]);
        Ok(Signature {
            algorithm,
            key_id: KeyId(key_id),
            signature: sixty_four(&sig[10..]),
            untrusted_comment: untrusted_comment.to_owned(),
            trusted_comment: trusted_comment.to_owned(),
            global_signature: sixty_four(&global),
        })
    }

    /// The signature file's text.
    pub fn encode(&self) -> String {
        let mut sig = Vec::with_capacity(SIGNATURE_BYTES);
        sig.extend_from_slice(match self.algorithm {
            Algorithm::Prehashed => &ALG_PREHASHED,
            Algorithm::Legacy => &ALG_LEGACY,
        });
        sig.extend_from_slice(&self.key_id.0);
        sig.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(sig),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }

    /// The value of `name` in a trusted comment of tab-separated `name:value` fields
    /// (minisign's own form: `timestamp:<unix>\tfile:<name>\thashed`).
    pub fn trusted_field(&self, name: &str) -> Option<&str> {
        self.trusted_comment
            .split('\t')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix(':'))
    }
}

fn message(algorithm: Algorithm, data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match algorithm {
        Algorithm::Prehashed => std::borrow::Cow::Owned(Blake2b512::digest(data).to_vec()),
        Algorithm::Legacy => std::borrow::Cow::Borrowed(data),
    }
}

/// Signs `data` (prehashed, `"ED"`) with `key`, whose key id is derived from its public key;
/// returns the signature file's text.
pub fn sign(
    key: &SigningKey,
    data: &[u8],
    trusted_comment: &str,
    untrusted_comment: &str,
) -> Result<String> {
    comment_ok("trusted comment", trusted_comment)?;
    comment_ok("untrusted comment", untrusted_comment)?;
    let algorithm = Algorithm::Prehashed;
    let signature = key.sign(&message(algorithm, data)).to_bytes();
    let mut global = Vec::with_capacity(64 + trusted_comment.len());
    global.extend_from_slice(&signature);
    global.extend_from_slice(trusted_comment.as_bytes());
    let global_signature = key.sign(&global).to_bytes();
    Ok(Signature {
        algorithm,
        key_id: KeyId::derive(&key.verifying_key()),
        signature,
        untrusted_comment: untrusted_comment.to_owned(),
        trusted_comment: trusted_comment.to_owned(),
        global_signature,
    }
    .encode())
}

/// A signature that verified, and the trusted key that made it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key: PublicKey,
    pub signature: Signature,
}

/// Verifies the signature file `signature` over `data` with one of `trusted` (chosen by the
/// signature's key id, as minisign does): the signature over the file and the one over the
/// trusted comment.
pub fn verify(trusted: &[PublicKey], data: &[u8], signature: &str) -> Result<Verified> {
    let sig = Signature::parse(signature)?;
    let key = trusted
        .iter()
        .find(|k| k.key_id == sig.key_id)
        .ok_or_else(|| {
            let pinned: Vec<String> = trusted.iter().map(|k| k.key_id.to_string()).collect();
            Error::Verify(format!(
                "signed by key id {}, which is not a trusted key (trusted: {})",
                sig.key_id,
                if pinned.is_empty() {
                    "none".to_owned()
                } else {
                    pinned.join(", ")
                }
            ))
        })?;
    key.key
        .verify_strict(
            &message(sig.algorithm, data),
            &EdSignature::from_bytes(&sig.signature),
        )
        .map_err(|_| {
            Error::Verify(format!(
                "the signature by key id {} does not match the data",
                sig.key_id
            ))
        })?;
    let mut global = Vec::with_capacity(64 + sig.trusted_comment.len());
    global.extend_from_slice(&sig.signature);
    global.extend_from_slice(sig.trusted_comment.as_bytes());
    key.key
        .verify_strict(&global, &EdSignature::from_bytes(&sig.global_signature))
        .map_err(|_| {
            Error::Verify(format!(
                "the trusted comment's signature by key id {} does not match (the comment was changed)",
                sig.key_id
            ))
        })?;
    Ok(Verified {
        key: key.clone(),
        signature: sig,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let k = key(7);
        let public = PublicKey::new(k.verifying_key());
        let text = sign(
            &k,
            b"packet bytes",
            "timestamp:1\tfile:p.zip\thashed",
            "sig",
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "untrusted comment: sig");
        assert_eq!(&B64.decode(lines[1]).unwrap()[..2], b"ED");
        assert_eq!(lines[2], "trusted comment: timestamp:1\tfile:p.zip\thashed");
        let v = verify(std::slice::from_ref(&public), b"packet bytes", &text).unwrap();
        assert_eq!(v.key, public);
        assert_eq!(v.signature.trusted_field("file"), Some("p.zip"));
        assert_eq!(v.signature.trusted_field("timestamp"), Some("1"));
        assert_eq!(Signature::parse(&text).unwrap().encode(), text);

        // Other data, another key, no key.
        assert!(verify(std::slice::from_ref(&public), b"packet byteS", &text).is_err());
        let stranger = PublicKey::new(key(8).verifying_key());
        let e = verify(std::slice::from_ref(&stranger), b"packet bytes", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a trusted key"), "{e}");
        assert!(verify(&[], b"packet bytes", &text).is_err());
        // The untrusted comment is not signed (as in minisign).
        let relabelled = text.replacen("untrusted comment: sig", "untrusted comment: x", 1);
        verify(std::slice::from_ref(&public), b"packet bytes", &relabelled).unwrap();
        // CRLF line ends parse too.
        verify(
            std::slice::from_ref(&public),
            b"packet bytes",
            &text.replace('\n', "\r\n"),
        )
        .unwrap();
    }

    #[test]
    fn a_flipped_byte_in_the_trusted_comment_fails() {
        let k = key(9);
        let public = PublicKey::new(k.verifying_key());
        let text = sign(&k, b"x", "timestamp:1\treport:r-1\ttenant:acme", "u").unwrap();
        let at = text.find("tenant:acme").unwrap() + "tenant:".len();
        let mut bytes = text.clone().into_bytes();
        bytes[at] ^= 0x01;
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(flipped.contains("tenant:`cme"));
        let e = verify(std::slice::from_ref(&public), b"x", &flipped)
            .unwrap_err()
            .to_string();
        assert!(e.contains("trusted comment"), "{e}");
        // Every byte of the two signature lines matters too.
        let lines: Vec<&str> = text.lines().collect();
        for line in [1, 3] {
            let decoded = B64.decode(lines[line]).unwrap();
            for i in 0..decoded.len() {
                let mut d = decoded.clone();
                d[i] ^= 0x01;
                let mut l = lines.clone();
                let enc = B64.encode(&d);
                l[line] = &enc;
                let changed = format!("{}\n", l.join("\n"));
                assert!(
                    verify(std::slice::from_ref(&public), b"x", &changed).is_err(),
                    "line {line} byte {i} changed unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_forged_key_id_does_not_borrow_trust() {
        // An attacker who writes the trusted key's id into a signature by their own key.
        let trusted = PublicKey::new(key(1).verifying_key());
        let attacker = key(2);
        let text = sign(&attacker, b"forged", "c", "u").unwrap();
        let mut sig = Signature::parse(&text).unwrap();
        sig.key_id = trusted.key_id;
        let e = verify(std::slice::from_ref(&trusted), b"forged", &sig.encode())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn public_keys_and_key_ids() {
        let k = key(3);
        let public = PublicKey::new(k.verifying_key());
        // The documented derivation: the first 8 bytes of SHA-256 of the key, shown as
        // minisign shows it (the little-endian u64 in upper-case hex).
        let digest = Sha256::digest(k.verifying_key().as_bytes());
        let mut le = digest[..8].to_vec();
        le.reverse();
        assert_eq!(public.key_id.to_string(), hex::encode_upper(le));
        assert_eq!(
            public.key_id.to_string().parse::<KeyId>().unwrap(),
            public.key_id
        );
        assert!(public.encode().starts_with("RW"), "base64 of \"Ed\"");
        assert_eq!(&B64.decode(public.encode()).unwrap()[..2], b"Ed");
        let file = public.file();
        assert!(file.starts_with(&format!(
            "untrusted comment: minisign public key {}\n",
            public.key_id
        )));
        assert_eq!(PublicKey::parse(&file).unwrap(), public);
        assert_eq!(PublicKey::parse(&public.encode()).unwrap(), public);
        assert_eq!(PublicKey::parse(&public.ed25519_base64()).unwrap(), public);
        for bad in [
            "",
            "not base64!",
            "AAAA",
            "a\nb\nc",
            // The identity point: small order.
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(PublicKey::parse(bad).is_err(), "{bad:?}");
        }
        // A secret key file (algorithm "Ed" but another length) is not a public key.
        assert!(PublicKey::parse(&B64.encode([0u8; 104])).is_err());
    }

    #[test]
    fn comments_stay_on_one_line() {
        let k = key(4);
        assert!(sign(&k, b"x", "a\nb", "u").is_err());
        assert!(sign(&k, b"x", "c", "u\r").is_err());
        assert!(sign(&k, b"x", &"c".repeat(COMMENT_MAX + 1), "u").is_err());
        assert!(Signature::parse("untrusted comment: a\nAAAA\n").is_err());
    }

    #[test]
    fn legacy_signatures_verify() {
        // "Ed": the file itself signed, as minisign -l writes it.
        let k = key(5);
        let public = PublicKey::new(k.verifying_key());
        let text = sign(&k, b"data", "c", "u").unwrap();
        let mut sig = Signature::parse(&text).unwrap();
        sig.algorithm = Algorithm::Legacy;
        sig.signature = k.sign(b"data").to_bytes();
        let mut global = sig.signature.to_vec();
        global.extend_from_slice(b"c");
        sig.global_signature = k.sign(&global).to_bytes();
        verify(std::slice::from_ref(&public), b"data", &sig.encode()).unwrap();
        assert!(verify(std::slice::from_ref(&public), b"datA", &sig.encode()).is_err());
    }
}
