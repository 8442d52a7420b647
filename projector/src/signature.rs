//! Evidence signatures: Ed25519 over the 32 raw bytes of the evidence's SHA-256, verified
//! against the public key of the tenant's registered trust root.

use aispm_schemas::SignatureState;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// Verifies `signature_b64` over the digest `sha256_hex` with `public_key_b64`.
pub fn verify(public_key_b64: &str, sha256_hex: &str, signature_b64: &str) -> SignatureState {
    let Some(key) = STANDARD
        .decode(public_key_b64.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
    else {
        return SignatureState::UnknownKey;
    };
    let Some(sig) = STANDARD
        .decode(signature_b64.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
    else {
        return SignatureState::Invalid;
    };
    let Some(digest) = hex_digest(sha256_hex) else {
        return SignatureState::Invalid;
    };
    if key.verify(&digest, &sig).is_ok() {
        SignatureState::Verified
    } else {
        SignatureState::Invalid
    }
}

fn hex_digest(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn verifies_and_rejects_forgeries() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let digest = [0xabu8; 32];
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let public = STANDARD.encode(key.verifying_key().to_bytes());
        let good = STANDARD.encode(key.sign(&digest).to_bytes());
        let forged = STANDARD.encode(other.sign(&digest).to_bytes());
        assert_eq!(verify(&public, &hex, &good), SignatureState::Verified);
        assert_eq!(verify(&public, &hex, &forged), SignatureState::Invalid);
        assert_eq!(
            verify(&public, &"00".repeat(32), &good),
            SignatureState::Invalid
        );
        assert_eq!(
            verify("not base64", &hex, &good),
            SignatureState::UnknownKey
        );
    }
}
