//! aispm's own validators.
//!
//! A validation result counts for readiness only when a registered validator key signed it
//! (`docs/evidence-signatures.md#validation-signatures`). The validators here do the work the
//! result claims and keep the transcript of it as the evidence the signature covers.
//!
//! - [`isolation`]: the tenant-isolation probe. It lives in its own binary, not in a service: it
//!   holds every tenant's read token and a validator key, which no service should hold, and it
//!   must see the services from outside, as an attacker holding one tenant's token would.

pub mod isolation;
pub mod sign;
