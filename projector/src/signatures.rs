//! Signature states: whether an evidence item's signature verifies against the tenant's
//! registered trust roots, or a validation's claim against its validator keys. Read by the
//! evidence and validation rows (`derive.rs`) and by the evidence findings (`rules/evidence.rs`),
//! each verdict remembered by the worker's cache (`Overlay::verdict`).

use crate::batch::Overlay;
use crate::error::Result;
use crate::state::{AssetAgg, Claim, EvidenceRecord, Tag};
use aispm_schemas::views::{SignatureState, VALIDATOR_SCOPE};

/// Whether the evidence's signature verifies against the tenant's registered trust root: the
/// contract's one rule (`aispm_schemas::signature`), over this tenant and evidence id; or, for
/// evidence a validation carried, over the validation's claim by a validator key.
pub(crate) fn signature_state(
    ov: &mut Overlay<'_>,
    tenant: &str,
    evidence_id: &str,
    r: &EvidenceRecord,
) -> Result<SignatureState> {
    match &r.claim {
        Some(claim) => claim_state(
            ov,
            tenant,
            claim,
            evidence_id,
            Some(&r.sha256),
            r.signature.as_deref(),
            r.key_id.as_deref(),
        ),
        None => {
            let (Some(sig), Some(key_id)) = (&r.signature, &r.key_id) else {
                return Ok(if r.signature.is_none() {
                    SignatureState::Unsigned
                } else {
                    SignatureState::UnknownKey
                });
            };
            Ok(match trust_root_key(ov, tenant, key_id, false)? {
                None => SignatureState::UnknownKey,
                Some(key) => ov.verdict(&[&key, tenant, evidence_id, &r.sha256, sig], || {
                    aispm_schemas::signature::verify(&key, tenant, evidence_id, &r.sha256, sig)
                }),
            })
        }
    }
}

/// The public key of the tenant's registered, unretired trust root `key_id`; with `validator`,
/// only if its scopes include `validator` (the keys whose signatures prove validation results).
fn trust_root_key(
    ov: &mut Overlay<'_>,
    tenant: &str,
    key_id: &str,
    validator: bool,
) -> Result<Option<String>> {
    let root: AssetAgg = ov.get(tenant, Tag::Asset, &format!("trust_root/{key_id}"))?;
    Ok(root
        .registration
        .as_ref()
        .filter(|r| !r.value.retired)
        .filter(|r| !validator || r.value.scopes.iter().any(|s| s == VALIDATOR_SCOPE))
        .and_then(|r| r.value.public_key.clone()))
}

/// Whether a validator's signature proves `claim` with the evidence (`evidence_id`, `sha256`).
pub(crate) fn claim_state(
    ov: &mut Overlay<'_>,
    tenant: &str,
    claim: &Claim,
    evidence_id: &str,
    sha256: Option<&str>,
    signature: Option<&str>,
    key_id: Option<&str>,
) -> Result<SignatureState> {
    let (Some(sig), Some(key_id), Some(sha256)) = (signature, key_id, sha256) else {
        return Ok(if signature.is_none() {
            SignatureState::Unsigned
        } else {
            SignatureState::UnknownKey
        });
    };
    let Some(key) = trust_root_key(ov, tenant, key_id, true)? else {
        return Ok(SignatureState::UnknownKey);
    };
    let Some(digest) = aispm_schemas::signature::digest(sha256) else {
        return Ok(SignatureState::Invalid);
    };
    let c = aispm_schemas::signature::ValidationClaim {
        tenant_id: tenant,
        event_id: &claim.event_id,
        check_kind: &claim.check_kind,
        environment: &claim.environment,
        subject: claim.subject.as_deref(),
        result: &claim.result,
        occurred_at_ms: claim.occurred_at,
        evidence_id,
        sha256: &digest,
    };
    Ok(c.verify(&key, sig))
}
