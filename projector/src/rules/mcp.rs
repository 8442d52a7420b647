//! AISPM-MCP-001 and AISPM-MCP-002: a tool of an MCP server, or any tool of a server,
//! registered as untrusted or quarantined, and called. A registration decides it; it is a
//! finding only once the tool or server is used, and it lists the calls.

use super::{Logic, On, used};
use aispm_schemas::rules as catalog;
use aispm_schemas::{Asset, AssetKind, CoverageKind, Trust};

pub(super) const RULES: &[Logic] = &[UNTRUSTED_MCP_TOOL, UNTRUSTED_MCP_SERVER];

const UNTRUSTED_MCP_TOOL: Logic = Logic {
    flag: Some(untrusted),
    ..Logic::new(
        catalog::UNTRUSTED_MCP_TOOL,
        &[
            On::Named(CoverageKind::McpTool),
            On::Registered(AssetKind::McpTool),
        ],
        used,
    )
};

const UNTRUSTED_MCP_SERVER: Logic = Logic {
    flag: Some(untrusted),
    ..Logic::new(
        catalog::UNTRUSTED_MCP_SERVER,
        &[
            On::Named(CoverageKind::McpServer),
            On::Registered(AssetKind::McpServer),
        ],
        used,
    )
};

fn untrusted(a: &Asset) -> bool {
    matches!(a.trust, Some(Trust::Untrusted | Trust::Quarantined))
}
