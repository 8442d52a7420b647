//! The finding rule catalog: [`aispm_schemas::rules`], where every service reads it.

pub(crate) use aispm_schemas::rules::*;
