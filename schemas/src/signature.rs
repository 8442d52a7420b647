//! Evidence signatures: what exactly is signed, how to sign it, how it is verified, and which
//! public keys may be registered to verify it. Every signer (gateways, the demo, the load
//! generator, the reporter's delivery evidence) and the one verifier (the projector) use this
//! module, so the rule cannot drift between them.
//!
//! # The signed message
//! An evidence signature is Ed25519 (RFC 8032, pure, no context) over this message:
//!
//! ```text
//! message = field("aispm/evidence/v1") || field(tenant_id) || field(evidence_id) || field(sha256)
//! field(x) = u32_be(len(x)) || x
//! ```
//!
//! - `"aispm/evidence/v1"` is the domain tag: 17 ASCII bytes. A signature made for anything
//!   else (another protocol, a packet manifest, a later version of this message) can never be
//!   taken for an evidence signature, and the reverse.
//! - `tenant_id` and `evidence_id` are the UTF-8 bytes of the event's `tenant_id` and the
//!   evidence's `evidence_id`, exactly as sent (no normalisation, no trimming).
//! - `sha256` is the 32 raw bytes of the artefact's SHA-256 (the evidence's `sha256` field is
//!   their lower-case hex).
//! - `u32_be(n)` is `n` as four bytes, big-endian. Every field is prefixed with its length, so
//!   no two different (tenant, evidence id, digest) triples give the same message: a signature
//!   cannot be moved to another evidence id or another tenant, nor shifted across a field
//!   boundary (`("ab", "c")` and `("a", "bc")` differ).
//!
//! For tenant `acme`, evidence id `ev-1` and the SHA-256 of the empty string the message is
//! these 73 bytes (hex):
//!
//! ```text
//! 00000011 616973706d2f65766964656e63652f7631      "aispm/evidence/v1"
//! 00000004 61636d65                                "acme"
//! 00000004 65762d31                                "ev-1"
//! 00000020 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//! ```
//!
//! The `signature` field carries the 64-byte signature in standard base64 (with padding); the
//! trust root's `public_key` carries the 32-byte public key the same way.
//!
//! # Verification
//! Strict ([`ed25519_dalek::VerifyingKey::verify_strict`]): the signature's `s` must be below
//! the group order (no malleable twin of a valid signature), and neither the key nor the
//! signature's `R` may be a small-order point (with one, a single signature can verify for
//! every message). Keys are checked once more at registration by [`public_key`]: a key that is
//! not exactly 32 bytes of base64, not a point of the curve, or of small order is refused.
//!
//! `docs/evidence-signatures.md` shows the same bytes and a Python `cryptography` signer that
//! a test runs against this module.

use crate::views::SignatureState;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// The domain tag, the message's first field.
pub const DOMAIN: &str = "aispm/evidence/v1";

/// The message an evidence signature covers (see the module docs for its bytes).
pub fn message(tenant_id: &str, evidence_id: &str, sha256: &[u8; 32]) -> Vec<u8> {
    framed(&[
        DOMAIN.as_bytes(),
        tenant_id.as_bytes(),
        evidence_id.as_bytes(),
        sha256,
    ])
}

/// The domain tag of a validation signature.
pub const VALIDATION_DOMAIN: &str = "aispm/validation/v1";

/// What a validator signs: the result it claims, bound to the event and the artefact (its
/// transcript) that proves it. A signature over one claim verifies for no other: not another
/// tenant, stage, check, subject, result, instant, event or transcript.
///
/// ```text
/// message = field("aispm/validation/v1") || field(tenant_id) || field(event_id)
///        || field(check_kind) || field(environment) || field(subject or "")
///        || field(result) || field(decimal occurred_at in ms since the epoch)
///        || field(evidence_id) || field(sha256, 32 raw bytes)
/// ```
///
/// `field` is the evidence message's (a 4-byte big-endian length, then the bytes). The
/// signature travels in the validation's `evidence.signature`, its key in `evidence.key_id`: a
/// `trust_root` whose `scopes` include `validator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationClaim<'a> {
    pub tenant_id: &'a str,
    pub event_id: &'a str,
    pub check_kind: &'a str,
    pub environment: &'a str,
    pub subject: Option<&'a str>,
    pub result: &'a str,
    pub occurred_at_ms: i64,
    pub evidence_id: &'a str,
    pub sha256: &'a [u8; 32],
}

impl ValidationClaim<'_> {
    /// The message a validator's signature covers.
    pub fn message(&self) -> Vec<u8> {
        let at = self.occurred_at_ms.to_string();
        framed(&[
            VALIDATION_DOMAIN.as_bytes(),
            self.tenant_id.as_bytes(),
            self.event_id.as_bytes(),
            self.check_kind.as_bytes(),
            self.environment.as_bytes(),
            self.subject.unwrap_or_default().as_bytes(),
            self.result.as_bytes(),
            at.as_bytes(),
            self.evidence_id.as_bytes(),
            self.sha256,
        ])
    }

    /// The base64 signature of the claim by `key`.
    pub fn sign(&self, key: &SigningKey) -> String {
        STANDARD.encode(key.sign(&self.message()).to_bytes())
    }

    /// Verifies `signature_b64` by `public_key_b64` over the claim, strictly (as [`verify`]).
    pub fn verify(&self, public_key_b64: &str, signature_b64: &str) -> SignatureState {
        verify_message(public_key_b64, &self.message(), signature_b64)
    }
}

/// Signs the validation of `r` as its validator: fills in its evidence's `signature` and
/// `key_id`. `false` (nothing changed) when `r` carries no validation with evidence, names no
/// environment, or its evidence's `sha256` is not hex.
pub fn sign_validation(key: &SigningKey, key_id: &str, r: &mut crate::RegistryEvent) -> bool {
    let Some(v) = r.validation.as_ref() else {
        return false;
    };
    let (Some(e), Some(env)) = (v.evidence.as_ref(), v.environment) else {
        return false;
    };
    let Some(sha) = digest(&e.sha256) else {
        return false;
    };
    let claim = ValidationClaim {
        tenant_id: &r.tenant_id,
        event_id: &r.event_id,
        check_kind: v.check_kind.as_str(),
        environment: env.as_str(),
        subject: v.subject.as_deref(),
        result: v.result.as_str(),
        occurred_at_ms: r.occurred_at.0,
        evidence_id: &e.evidence_id,
        sha256: &sha,
    };
    let signature = claim.sign(key);
    if let Some(e) = r.validation.as_mut().and_then(|v| v.evidence.as_mut()) {
        e.signature = Some(signature);
        e.key_id = Some(key_id.to_owned());
    }
    true
}

/// Length-prefixes and concatenates `fields`.
fn framed(fields: &[&[u8]]) -> Vec<u8> {
    let mut m = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for f in fields {
        // Ids are at most a few hundred bytes (validate.rs); saturate rather than wrap anyway,
        // so no input can alias another through an overflowing length.
        m.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        m.extend_from_slice(f);
    }
    m
}

/// The 32 bytes of a lower-case hex SHA-256 (the form the contract's `sha256` fields take).
pub fn digest(sha256_hex: &str) -> Option<[u8; 32]> {
    let hex = sha256_hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Signs the evidence `evidence_id` of `tenant_id` whose artefact has SHA-256 `sha256`; the
/// base64 signature, as the `signature` field carries it.
pub fn sign(key: &SigningKey, tenant_id: &str, evidence_id: &str, sha256: &[u8; 32]) -> String {
    STANDARD.encode(
        key.sign(&message(tenant_id, evidence_id, sha256))
            .to_bytes(),
    )
}

/// [`sign`] for a digest in hex; `None` when `sha256_hex` is not 64 lower-case hex characters.
pub fn sign_hex(
    key: &SigningKey,
    tenant_id: &str,
    evidence_id: &str,
    sha256_hex: &str,
) -> Option<String> {
    digest(sha256_hex).map(|d| sign(key, tenant_id, evidence_id, &d))
}

/// Why a public key cannot be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not standard base64")]
    NotBase64,
    #[error("is {0} bytes; an Ed25519 public key is exactly 32")]
    Length(usize),
    #[error("is not an Ed25519 public key (not a point of the curve)")]
    NotAPoint,
    #[error(
        "is a weak Ed25519 public key (a point of small order): one signature would verify for every message"
    )]
    Weak,
}

impl KeyError {
    /// The short stable label dead letters and metrics use: `weak_key` or `invalid_key`.
    pub fn reason(self) -> &'static str {
        match self {
            KeyError::Weak => "weak_key",
            _ => "invalid_key",
        }
    }
}

/// Parses a registered `public_key`: exactly 32 bytes in standard base64, a point of the curve,
/// and not of small order.
pub fn public_key(public_key_b64: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = STANDARD
        .decode(public_key_b64)
        .map_err(|_| KeyError::NotBase64)?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Length(bytes.len()))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint)?;
    if key.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(key)
}

/// Verifies an evidence signature strictly: `signature_b64` by `public_key_b64` over the
/// message for (`tenant_id`, `evidence_id`, `sha256_hex`).
///
/// [`SignatureState::UnknownKey`] when the key is not one [`public_key`] accepts (it could not
/// have been registered); [`SignatureState::Invalid`] when the signature is not 64 bytes of
/// base64, the digest is not hex, or the signature does not verify strictly.
pub fn verify(
    public_key_b64: &str,
    tenant_id: &str,
    evidence_id: &str,
    sha256_hex: &str,
    signature_b64: &str,
) -> SignatureState {
    let Some(sha256) = digest(sha256_hex) else {
        return SignatureState::Invalid;
    };
    verify_message(
        public_key_b64,
        &message(tenant_id, evidence_id, &sha256),
        signature_b64,
    )
}

/// Verifies `signature_b64` by `public_key_b64` over `message`, strictly.
fn verify_message(public_key_b64: &str, message: &[u8], signature_b64: &str) -> SignatureState {
    let Ok(key) = public_key(public_key_b64) else {
        return SignatureState::UnknownKey;
    };
    let Some(sig) = STANDARD
        .decode(signature_b64)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
    else {
        return SignatureState::Invalid;
    };
    match key.verify_strict(message, &sig) {
        Ok(()) => SignatureState::Verified,
        Err(_) => SignatureState::Invalid,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn public(k: &SigningKey) -> String {
        STANDARD.encode(k.verifying_key().as_bytes())
    }

    #[test]
    fn the_message_bytes_are_pinned() {
        let m = message("acme", "ev-1", &digest(EMPTY_SHA256).unwrap());
        let expected = unhex(
            "00000011 616973706d2f65766964656e63652f7631
             00000004 61636d65
             00000004 65762d31
             00000020 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert_eq!(m, expected);
        assert_eq!(m.len(), 73);
        // Field boundaries are part of the message.
        let d = [0u8; 32];
        assert_ne!(message("ab", "c", &d), message("a", "bc", &d));
    }

    #[test]
    fn a_known_signature_is_pinned() {
        // Ed25519 is deterministic: the key of seed 07×32 signs this message to exactly these
        // bytes. The Python example in docs/evidence-signatures.md must produce the same.
        let sig = sign(&key(), "acme", "ev-1", &digest(EMPTY_SHA256).unwrap());
        assert_eq!(sig, KNOWN_SIGNATURE);
        assert_eq!(
            verify(&public(&key()), "acme", "ev-1", EMPTY_SHA256, &sig),
            SignatureState::Verified
        );
    }

    /// The signature of seed 07×32 over the message for (`acme`, `ev-1`, SHA-256 of ""), as
    /// Python's `cryptography` (OpenSSL) computes it.
    const KNOWN_SIGNATURE: &str =
        "u1Nsmyn48TIXmnKPE3Y9ng0pcaLfKPK3jWy/BaZTzRX+8kaxhMumSAaDAfwtpzrT2sdK8QcUA3YlLuyOFehEBQ==";

    #[test]
    fn a_signature_replayed_on_another_evidence_id_or_tenant_is_invalid() {
        let k = key();
        let sha = "ab".repeat(32);
        let sig = sign_hex(&k, "acme", "ev-1", &sha).unwrap();
        let pk = public(&k);
        assert_eq!(
            verify(&pk, "acme", "ev-1", &sha, &sig),
            SignatureState::Verified
        );
        assert_eq!(
            verify(&pk, "acme", "ev-2", &sha, &sig),
            SignatureState::Invalid
        );
        assert_eq!(
            verify(&pk, "globex", "ev-1", &sha, &sig),
            SignatureState::Invalid
        );
        assert_eq!(
            verify(&pk, "acme", "ev-1", &"cd".repeat(32), &sig),
            SignatureState::Invalid
        );
        // The old scheme (a signature over the bare digest) no longer verifies.
        let bare = STANDARD.encode(k.sign(&digest(&sha).unwrap()).to_bytes());
        assert_eq!(
            verify(&pk, "acme", "ev-1", &sha, &bare),
            SignatureState::Invalid
        );
        // Another key's signature does not verify.
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let forged = sign_hex(&other, "acme", "ev-1", &sha).unwrap();
        assert_eq!(
            verify(&pk, "acme", "ev-1", &sha, &forged),
            SignatureState::Invalid
        );
    }

    #[test]
    fn a_validation_signature_binds_every_claim() {
        let k = key();
        let pk = public(&k);
        let sha = digest(EMPTY_SHA256).unwrap();
        let claim = ValidationClaim {
            tenant_id: "acme",
            event_id: "v-1",
            check_kind: "tenant_isolation",
            environment: "production",
            subject: None,
            result: "pass",
            occurred_at_ms: 1_800_000_000_000,
            evidence_id: "ev-v-1",
            sha256: &sha,
        };
        let m = claim.message();
        assert_eq!(&m[..23], b"\0\0\0\x13aispm/validation/v1");
        assert_eq!(&m[m.len() - 36..m.len() - 32], &[0, 0, 0, 32]);
        let sig = claim.sign(&k);
        assert_eq!(claim.verify(&pk, &sig), SignatureState::Verified);
        let other = [0u8; 32];
        for changed in [
            ValidationClaim {
                tenant_id: "globex",
                ..claim
            },
            ValidationClaim {
                event_id: "v-2",
                ..claim
            },
            ValidationClaim {
                check_kind: "connector_live",
                ..claim
            },
            ValidationClaim {
                environment: "trial",
                ..claim
            },
            ValidationClaim {
                subject: Some("x"),
                ..claim
            },
            ValidationClaim {
                result: "fail",
                ..claim
            },
            ValidationClaim {
                occurred_at_ms: 1_800_000_000_001,
                ..claim
            },
            ValidationClaim {
                evidence_id: "ev-v-2",
                ..claim
            },
            ValidationClaim {
                sha256: &other,
                ..claim
            },
        ] {
            assert_eq!(
                changed.verify(&pk, &sig),
                SignatureState::Invalid,
                "{changed:?}"
            );
        }
        // Neither signature passes for the other kind: the domains differ.
        let evidence_sig = sign(&k, "acme", "ev-v-1", &sha);
        assert_eq!(claim.verify(&pk, &evidence_sig), SignatureState::Invalid);
        assert_eq!(
            verify(&pk, "acme", "ev-v-1", EMPTY_SHA256, &sig),
            SignatureState::Invalid
        );
    }

    #[test]
    fn small_order_keys_are_refused_and_never_verify() {
        // The identity point: 01 00 … 00.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let identity_b64 = STANDARD.encode(identity);
        assert_eq!(public_key(&identity_b64).unwrap_err(), KeyError::Weak);
        assert_eq!(KeyError::Weak.reason(), "weak_key");
        let sha = "ab".repeat(32);
        let zero = STANDARD.encode([0u8; 64]);
        assert_ne!(
            verify(&identity_b64, "acme", "ev-1", &sha, &zero),
            SignatureState::Verified
        );
        // The forgery the lax check accepts: R = the identity, s = 0 verifies for every message
        // under the identity key with `verify`, never here.
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let lax = VerifyingKey::from_bytes(&identity).unwrap();
        let m = message("acme", "ev-1", &digest(&sha).unwrap());
        assert!(
            lax.verify(&m, &Signature::from_bytes(&forged)).is_ok(),
            "the lax check accepts the forgery (the case this module exists for)"
        );
        assert_eq!(
            verify(
                &identity_b64,
                "acme",
                "ev-1",
                &sha,
                &STANDARD.encode(forged)
            ),
            SignatureState::UnknownKey
        );
        // Every small-order point is refused: the other seven torsion points' encodings.
        for hex in [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        ] {
            let k = STANDARD.encode(unhex(hex));
            assert_eq!(public_key(&k).unwrap_err(), KeyError::Weak, "{hex}");
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(public_key("not base64!").unwrap_err(), KeyError::NotBase64);
        assert_eq!(
            public_key(&STANDARD.encode([9u8; 31])).unwrap_err(),
            KeyError::Length(31)
        );
        assert_eq!(
            public_key(&STANDARD.encode([9u8; 33])).unwrap_err(),
            KeyError::Length(33)
        );
        // Whitespace is not base64: the registered string is the key, byte for byte.
        let good = public(&key());
        assert!(public_key(&good).is_ok());
        assert_eq!(
            public_key(&format!("{good}\n")).unwrap_err(),
            KeyError::NotBase64
        );
        // y = 2 is not the y-coordinate of a curve point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            public_key(&STANDARD.encode(not_a_point)).unwrap_err(),
            KeyError::NotAPoint
        );
        assert_eq!(KeyError::NotAPoint.reason(), "invalid_key");
    }

    #[test]
    fn a_non_canonical_signature_is_invalid() {
        // s + L verifies under the textbook equation ([s]B = R + [k]A, as the group has order
        // L) but is a malleated twin: strict verification refuses s ≥ L.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let k = key();
        let sha = "ab".repeat(32);
        let good = STANDARD
            .decode(sign_hex(&k, "acme", "ev-1", &sha).unwrap())
            .unwrap();
        let mut twin = good.clone();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(good[32 + i]) + u16::from(L[i]) + carry;
            twin[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert_ne!(twin, good);
        assert_eq!(
            verify(&public(&k), "acme", "ev-1", &sha, &STANDARD.encode(&twin)),
            SignatureState::Invalid
        );
    }

    #[test]
    fn malformed_signatures_and_digests_are_invalid() {
        let k = key();
        let pk = public(&k);
        let sha = "ab".repeat(32);
        let sig = sign_hex(&k, "acme", "ev-1", &sha).unwrap();
        assert_eq!(
            verify(&pk, "acme", "ev-1", &sha, "###"),
            SignatureState::Invalid
        );
        assert_eq!(
            verify(&pk, "acme", "ev-1", &sha, &STANDARD.encode([1u8; 63])),
            SignatureState::Invalid
        );
        assert_eq!(
            verify(&pk, "acme", "ev-1", &sha.to_uppercase(), &sig),
            SignatureState::Invalid
        );
        assert_eq!(digest(&"g".repeat(64)), None);
        assert_eq!(sign_hex(&k, "acme", "ev-1", "abc"), None);
        assert_eq!(
            verify("bm90IGEga2V5", "acme", "ev-1", &sha, &sig),
            SignatureState::UnknownKey
        );
    }
}
