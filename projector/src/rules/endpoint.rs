//! AISPM-EP-001: a model endpoint registered as public without authentication. A
//! registration decides it.

use super::{Logic, On, registered};
use aispm_schemas::rules as catalog;
use aispm_schemas::{Asset, AssetKind, AssetStatus, CoverageKind};

pub(super) const RULES: &[Logic] = &[PUBLIC_ENDPOINT];

const PUBLIC_ENDPOINT: Logic = Logic {
    flag: Some(public_without_auth),
    ..Logic::new(
        catalog::PUBLIC_ENDPOINT,
        &[
            On::Registered(AssetKind::ModelEndpoint),
            On::RiskOf(CoverageKind::ModelEndpoint),
        ],
        registered,
    )
};

fn public_without_auth(a: &Asset) -> bool {
    a.status == AssetStatus::Registered && a.public == Some(true) && a.auth_required == Some(false)
}
