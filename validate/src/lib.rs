//! aispm's own validators.
//!
//! A validation result counts for readiness only when a registered validator key signed it
//! (`docs/evidence-signatures.md#validation-signatures`). The validators here do the work the
//! result claims and keep the transcript of it as the evidence the signature covers.
//!
//! - [`isolation`]: the tenant-isolation probe. It lives in its own binary, not in a service: it
//!   holds every tenant's read token and a validator key, which no service should hold, and it
//!   must see the services from outside, as an attacker holding one tenant's token would.
//! - [`connector`]: the live-connector probe. A CLI run beside the connector (where its
//!   credentials already are, by the operator or a scheduler), not a service: aispm never holds
//!   the credentials of the systems a tenant's connectors read.
//! - The report provider is validated by the reporter itself (`aispm-reporter
//!   --validator-key`): only a real delivery proves the provider, and the reporter is what
//!   delivers. It signs with [`sign::signed_result`] from here.

pub mod connector;
pub mod isolation;
pub mod sign;
