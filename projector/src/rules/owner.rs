//! AISPM-OWN-001: an agent registered without an owner. A registration decides it.

use super::{Logic, On, registered};
use aispm_schemas::rules as catalog;
use aispm_schemas::{Asset, AssetKind, AssetStatus, CoverageKind};

pub(super) const RULES: &[Logic] = &[AGENT_UNOWNED];

const AGENT_UNOWNED: Logic = Logic {
    flag: Some(unowned),
    ..Logic::new(
        catalog::AGENT_UNOWNED,
        &[
            On::Registered(AssetKind::Agent),
            On::RiskOf(CoverageKind::Agent),
        ],
        registered,
    )
};

fn unowned(a: &Asset) -> bool {
    a.status == AssetStatus::Registered && a.owner.is_none()
}
