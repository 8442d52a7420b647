//! Column families, declared once. Every key starts with the tenant id and a NUL byte, so a
//! prefix scan is a tenant scan; tenant ids cannot contain NUL (they are validated).

use aispm_schemas::ViewName;

/// `{topic} \0 {partition: u32 BE}` → next offset to apply (i64 BE). Written in the same
/// `WriteBatch` as the changes the records before that offset made.
pub const OFFSETS: &str = "offsets";
/// `{tenant} \0 {event_id}` → empty: events already applied (replays change nothing).
pub const SEEN: &str = "seen";
/// `{tenant} \0 {tag} \0 {id}` → postcard aggregate (see `state.rs`): the facts rows derive from.
pub const STATE: &str = "state";
/// `{batch seq: u64 BE}` → postcard list of (view, tenant, row key, change stamp): one batch's
/// view changes, durable but not yet acknowledged by the views topic. Emptied after publishing;
/// at start each listed row is published again as stored then (see `project::Pending`).
pub const OUTBOX: &str = "outbox";
/// `{partition: i32 BE} {view: u8} {tenant} \0 {row key}` → empty: rows owed by a catch-up
/// (`catchup.rs`), derived while the input partitions of that number were replayed to the end
/// they had when this instance took them, and derived again and published once that end is
/// reached. Written in the same `WriteBatch` as the rows; cleared after publishing.
pub const OWED: &str = "owed";
/// `version` → the view schema version the rows were built with; other bookkeeping.
pub const META: &str = "meta";

/// The view column families: `{tenant} \0 {row key}` → postcard row.
pub const VIEWS: [(ViewName, &str); 7] = [
    (ViewName::Coverage, "coverage"),
    (ViewName::Controls, "controls"),
    (ViewName::Findings, "findings"),
    (ViewName::Exceptions, "exceptions"),
    (ViewName::Evidence, "evidence"),
    (ViewName::Validations, "validations"),
    (ViewName::ReportDeliveries, "report_deliveries"),
];

/// Every column family.
pub fn all() -> Vec<&'static str> {
    let mut cfs = vec![OFFSETS, SEEN, STATE, OUTBOX, OWED, META];
    cfs.extend(VIEWS.iter().map(|(_, cf)| *cf));
    cfs
}

/// The column family of a view.
pub fn view_cf(view: ViewName) -> &'static str {
    VIEWS
        .iter()
        .find(|(v, _)| *v == view)
        .map(|(_, cf)| *cf)
        .unwrap_or("findings")
}

/// `{tenant} \0 {rest}`.
pub fn tenant_key(tenant: &str, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + rest.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(rest.as_bytes());
    k
}

/// `{tenant} \0` — the prefix of every key of a tenant.
pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    tenant_key(tenant, "")
}

/// Splits `{tenant} \0 {rest}`.
pub fn split_tenant_key(key: &[u8]) -> Option<(&str, &str)> {
    let at = key.iter().position(|b| *b == 0)?;
    let tenant = std::str::from_utf8(&key[..at]).ok()?;
    let rest = std::str::from_utf8(&key[at + 1..]).ok()?;
    Some((tenant, rest))
}

/// `{topic} \0 {partition BE}`.
pub fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Inverse of [`offset_key`].
pub fn split_offset_key(key: &[u8]) -> Option<(String, i32)> {
    let at = key.iter().position(|b| *b == 0)?;
    let topic = std::str::from_utf8(&key[..at]).ok()?.to_owned();
    let p: [u8; 4] = key.get(at + 1..at + 5)?.try_into().ok()?;
    Some((topic, i32::from_be_bytes(p)))
}

/// `{partition BE} {view} {tenant} \0 {row key}`: an [`OWED`] key.
pub fn owed_key(partition: i32, view: u8, tenant: &str, row: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + tenant.len() + 1 + row.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(view);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(row.as_bytes());
    k
}

/// Inverse of [`owed_key`]: partition, view, tenant, row key.
pub fn split_owed_key(key: &[u8]) -> Option<(i32, u8, &str, &str)> {
    let partition = i32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    let view = *key.get(4)?;
    let (tenant, row) = split_tenant_key(key.get(5..)?)?;
    Some((partition, view, tenant, row))
}
