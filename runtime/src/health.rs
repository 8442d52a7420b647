//! Readiness conditions a service reports. `/healthz` answers while the process is alive;
//! `/readyz` answers 200 only when every registered condition holds.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One readiness condition.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub ok: bool,
    pub detail: String,
}

/// The set of readiness conditions; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    conditions: Arc<Mutex<BTreeMap<&'static str, Condition>>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares or updates a condition (e.g. `broker`, `partitions_assigned`, `state_restored`).
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let mut c = self
            .conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.insert(
            name,
            Condition {
                ok,
                detail: detail.into(),
            },
        );
    }

    /// Whether every condition holds (and at least one was declared), with the conditions.
    pub fn ready(&self) -> (bool, BTreeMap<&'static str, Condition>) {
        let c = self
            .conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (!c.is_empty() && c.values().all(|c| c.ok), c)
    }
}
