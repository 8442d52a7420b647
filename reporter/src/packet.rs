//! A packet on disk: a directory and a `.zip` of it, both holding the rendered files, a
//! `manifest.json` listing every file with its SHA-256, `manifest.json.minisig`, the minisign
//! signature of `manifest.json`, and `manifest.sig`, the Ed25519 signature over
//! SHA-256(`manifest.json`) that the delivery event's evidence cites. Beside the `.zip`,
//! `<report-id>.zip.minisig` is the minisign signature of the archive itself, so that
//! `minisign -Vm <report-id>.zip -P <key>` checks the delivered file as it is.
//!
//! ```text
//! <out-dir>/<tenant>/<report-id>/          <out-dir>/<tenant>/<report-id>.zip
//!   report.html  report.json                 (the same files under <report-id>/)
//!   tables/*.csv  ocsf/findings.ocsf.json  <out-dir>/<tenant>/<report-id>.zip.minisig
//!   manifest.json  manifest.json.minisig
//!   manifest.sig
//! ```
//!
//! Both minisign signatures carry the trusted comment
//! `timestamp:<unix seconds>\tfile:<name>\thashed\treport:<report-id>\ttenant:<tenant>`.
//!
//! [`verify`] accepts either form, only against keys the caller pins (never the key the
//! manifest names), and fails on any changed, missing or extra byte or file.

use crate::minisign::{self, KeyId, PublicKey};
use crate::sign::{Signer, sha256, sha256_hex, verify_digest};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The `format` of `manifest.json`.
pub const MANIFEST_FORMAT: &str = "aispm.packet.v1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// The minisign signature of `manifest.json`, inside the packet.
pub const MANIFEST_MINISIG: &str = "manifest.json.minisig";

/// Where the minisign signature of a packet archive lives: beside it, `<archive>.minisig`
/// (where `minisign -V` looks for it).
pub fn archive_signature_path(zip: &Path) -> PathBuf {
    let mut name = zip.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// One file of a packet, by its path inside the packet (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

impl PacketFile {
    pub fn new(path: &str, bytes: Vec<u8>) -> Self {
        PacketFile {
            path: path.to_owned(),
            bytes,
        }
    }
}

/// One entry of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Who signed the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerInfo {
    pub algorithm: String,
    pub key_id: String,
    /// Base64 of the 32 raw bytes of the Ed25519 public key.
    pub public_key: String,
    /// What `manifest.sig` signs.
    pub signs: String,
    /// The minisign key id (fingerprint) of the key that signed `manifest.json.minisig` and
    /// the archive. For information only: a verifier checks against the key it pinned.
    #[serde(default)]
    pub minisign_key_id: String,
    /// That key as a minisign public key string; for information only, like `minisign_key_id`.
    #[serde(default)]
    pub minisign_public_key: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub report_id: String,
    pub tenant_id: String,
    pub report_type: String,
    pub generated_at: String,
    pub generator: String,
    pub signer: SignerInfo,
    pub files: Vec<Entry>,
}

/// A packet written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub dir: PathBuf,
    pub zip: PathBuf,
    /// SHA-256 of the `.zip` (the delivered artefact).
    pub zip_sha256: String,
    pub zip_bytes: u64,
    /// SHA-256 of `manifest.json`, and the base64 signature over it.
    pub manifest_sha256: String,
    pub signature: String,
    pub manifest: Manifest,
    /// The minisign signature of the `.zip` (`<report-id>.zip.minisig`, beside it); `None` for
    /// packets written before packets were signed with minisign.
    #[serde(default)]
    pub zip_minisig: Option<PathBuf>,
}

/// What the packet is about; the manifest's header.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    pub report_id: &'a str,
    pub tenant_id: &'a str,
    pub report_type: &'a str,
    pub generated_at: String,
    pub key_id: &'a str,
}

fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Writes the packet under `root/<tenant>/`: the directory and the `.zip`, each first under a
/// temporary name and renamed into place, so a reader never sees half a packet.
pub fn write(
    root: &Path,
    meta: &Meta<'_>,
    files: Vec<PacketFile>,
    signer: &Signer,
) -> Result<Written> {
    let tenant_dir = root.join(meta.tenant_id);
    std::fs::create_dir_all(&tenant_dir).map_err(|e| Error::io(&tenant_dir, e))?;
    let public = PublicKey::new(signer.verifying_key());
    let mut entries = Vec::with_capacity(files.len());
    for f in &files {
        if !safe_relative(&f.path)
            || f.path == MANIFEST
            || f.path == SIGNATURE
            || f.path == MANIFEST_MINISIG
        {
            return Err(Error::Config(format!(
                "invalid packet file name {:?}",
                f.path
            )));
        }
        entries.push(Entry {
            path: f.path.clone(),
            sha256: sha256_hex(&f.bytes),
            bytes: f.bytes.len() as u64,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        report_id: meta.report_id.to_owned(),
        tenant_id: meta.tenant_id.to_owned(),
        report_type: meta.report_type.to_owned(),
        generated_at: meta.generated_at.clone(),
        generator: format!("aispm-reporter {}", env!("CARGO_PKG_VERSION")),
        signer: SignerInfo {
            algorithm: "ed25519".to_owned(),
            key_id: meta.key_id.to_owned(),
            public_key: signer.public_key_b64(),
            signs: "sha256(manifest.json)".to_owned(),
            minisign_key_id: public.key_id.to_string(),
            minisign_public_key: public.encode(),
        },
        files: entries,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    let digest = sha256(&manifest_bytes);
    let signature = signer.sign_digest(&digest);
    let manifest_minisig = minisign_sign(signer, meta, MANIFEST, &manifest_bytes)?;
    let mut all = files;
    all.push(PacketFile::new(MANIFEST, manifest_bytes));
    all.push(PacketFile::new(
        SIGNATURE,
        format!("{signature}\n").into_bytes(),
    ));
    all.push(PacketFile::new(
        MANIFEST_MINISIG,
        manifest_minisig.into_bytes(),
    ));

    // The directory.
    let dir = tenant_dir.join(meta.report_id);
    let tmp_dir = tenant_dir.join(format!(".{}.tmp", meta.report_id));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    let mut dirs = std::collections::BTreeSet::new();
    let written = all.iter().try_for_each(|f| {
        let p = tmp_dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            dirs.insert(parent.to_path_buf());
        }
        write_synced(&p, &f.bytes)
    });
    // The files are synced; their names too, deepest directory first, before the directory
    // is renamed into place (durably: its parent synced after).
    let synced = written.and_then(|()| {
        dirs.iter()
            .rev()
            .try_for_each(|d| aispm_runtime::fs::sync_dir(d).map_err(|e| Error::io(d, e)))
    });
    if let Err(e) = synced.and_then(|()| {
        aispm_runtime::fs::rename_durable(&tmp_dir, &dir).map_err(|e| Error::io(&dir, e))
    }) {
        // A full disk, say: leave nothing behind (the space is needed, and no record will
        // ever name this packet).
        let _ = std::fs::remove_dir_all(&tmp_dir);
        return Err(e);
    }

    // The archive: canonical (sorted entries, stored, fixed timestamps and modes), so that
    // `verify` can rebuild it from its verified contents and compare every byte; and its
    // minisign signature beside it, in place before the archive is.
    let zip = tenant_dir.join(format!("{}.zip", meta.report_id));
    let tmp_zip = tenant_dir.join(format!(".{}.zip.tmp", meta.report_id));
    let zip_sig = archive_signature_path(&zip);
    let tmp_sig = tenant_dir.join(format!(".{}.zip.minisig.tmp", meta.report_id));
    let archived = archive(
        meta.report_id,
        all.iter().map(|f| (f.path.as_str(), f.bytes.as_slice())),
    )
    .and_then(|zip_bytes| {
        let name = format!("{}.zip", meta.report_id);
        let sig = minisign_sign(signer, meta, &name, &zip_bytes)?;
        write_synced(&tmp_sig, sig.as_bytes())?;
        aispm_runtime::fs::rename_durable(&tmp_sig, &zip_sig)
            .map_err(|e| Error::io(&zip_sig, e))?;
        write_synced(&tmp_zip, &zip_bytes)?;
        aispm_runtime::fs::rename_durable(&tmp_zip, &zip).map_err(|e| Error::io(&zip, e))?;
        Ok(zip_bytes)
    });
    let zip_bytes = match archived {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_zip);
            let _ = std::fs::remove_file(&tmp_sig);
            let _ = std::fs::remove_file(&zip_sig);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    Ok(Written {
        dir,
        zip,
        zip_sha256: sha256_hex(&zip_bytes),
        zip_bytes: zip_bytes.len() as u64,
        manifest_sha256: hex::encode(digest),
        signature,
        manifest,
        zip_minisig: Some(zip_sig),
    })
}

/// The minisign signature of `bytes` (the file `name` of the packet), with the packet's
/// identity in the trusted comment.
fn minisign_sign(signer: &Signer, meta: &Meta<'_>, name: &str, bytes: &[u8]) -> Result<String> {
    let at = chrono::DateTime::parse_from_rfc3339(&meta.generated_at).map_err(|e| {
        Error::Config(format!(
            "generated_at {:?} is not RFC 3339 ({e})",
            meta.generated_at
        ))
    })?;
    minisign::sign(
        signer.signing_key(),
        bytes,
        &format!(
            "timestamp:{}\tfile:{name}\thashed\treport:{}\ttenant:{}",
            at.timestamp(),
            meta.report_id,
            meta.tenant_id
        ),
        &format!(
            "signature from aispm-reporter key {}",
            PublicKey::new(signer.verifying_key()).key_id
        ),
    )
}

/// Removes what packet writes cut short by a crash left under `root/<tenant>/` (the
/// temporary `.<id>.tmp` directories, `.<id>.zip.tmp` archives and `.<id>.zip.minisig.tmp`
/// signatures, and a `<id>.zip.minisig` without its archive); returns how many. Run at
/// start, before any packet is written (one reporter per packet directory).
pub fn remove_partial(root: &Path) -> usize {
    let mut removed = 0;
    let Ok(tenants) = std::fs::read_dir(root) else {
        return 0;
    };
    for tenant in tenants.flatten() {
        let Ok(entries) = std::fs::read_dir(tenant.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let p = e.path();
            // A temporary file or directory, or an archive's signature whose archive a crash
            // kept from being renamed into place.
            let partial = (name.starts_with('.') && name.ends_with(".tmp"))
                || name
                    .strip_suffix(".minisig")
                    .is_some_and(|zip| zip.ends_with(".zip") && !p.with_file_name(zip).exists());
            if !partial {
                continue;
            }
            let gone = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match gone {
                Ok(()) => removed += 1,
                Err(err) => {
                    tracing::warn!(path = %p.display(), error = %err, "Cannot remove a partial packet.")
                }
            }
        }
    }
    removed
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    aispm_runtime::fs::write_synced(path, bytes).map_err(|e| Error::io(path, e))
}

/// The canonical archive of a packet: entries `<report-id>/<path>` in path order, stored
/// uncompressed, with a fixed timestamp and mode.
fn archive<'a>(
    report_id: &str,
    files: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&str, &[u8])> = files.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(0o644)
            .large_file(false);
        for (path, bytes) in sorted {
            z.start_file(format!("{report_id}/{path}"), opts)?;
            z.write_all(bytes)
                .map_err(|e| Error::Verify(format!("archiving {path}: {e}")))?;
        }
        z.finish()?;
    }
    Ok(buf.into_inner())
}

/// A packet that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// SHA-256 of the archive, when a `.zip` was verified (compare with `packet_sha256`).
    pub archive_sha256: Option<String>,
    pub manifest_sha256: String,
    pub files: usize,
    /// The pinned key that signed.
    pub signed_by: PublicKey,
    /// The trusted comment of `manifest.json.minisig`.
    pub trusted_comment: String,
    /// The archive's own minisign signature, when one lay beside the `.zip` (it verified too).
    pub archive_signature: Option<PathBuf>,
}

/// Verifies a packet directory or `.zip` against the keys the caller trusts (at least one;
/// never the key the manifest names): `manifest.json.minisig` by one of `trusted`,
/// `manifest.sig` by the same key, every listed file's SHA-256 and size, and that no file is
/// missing or extra. For a `.zip`, also every byte of the archive, and the archive's own
/// signature (`<zip>.minisig`) when one lies beside it.
pub fn verify(path: &Path, trusted: &[PublicKey]) -> Result<Verified> {
    if trusted.is_empty() {
        return Err(Error::Verify(
            "no pinned public key: a packet is verified only against a key you trust, never the one it carries"
                .into(),
        ));
    }
    if path.is_dir() {
        return verify_files(&read_dir(path)?, trusted);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (report_id, files) = read_zip(&bytes)?;
    let verified = verify_files(&files, trusted)?;
    if verified.manifest.report_id != report_id {
        return Err(Error::Verify(format!(
            "the archive's directory {report_id} is not the manifest's report {}",
            verified.manifest.report_id
        )));
    }
    // Every byte of the archive, not only the entries' contents: rebuild the canonical archive
    // from the verified files and compare.
    let canonical = archive(
        &report_id,
        files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
    )?;
    if canonical != bytes {
        return Err(Error::Verify(
            "the archive's bytes differ from the canonical packet archive (its headers or layout were changed)"
                .into(),
        ));
    }
    let sig_path = archive_signature_path(path);
    let archive_signature = match std::fs::read(&sig_path) {
        Ok(sig) => {
            let sig = String::from_utf8(sig)
                .map_err(|_| Error::Verify(format!("{} is not text", sig_path.display())))?;
            let v = minisign::verify(std::slice::from_ref(&verified.signed_by), &bytes, &sig)
                .map_err(|e| context(&sig_path.display().to_string(), e))?;
            check_identity(
                &v.signature,
                &verified.manifest,
                &sig_path.display().to_string(),
            )?;
            Some(sig_path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&sig_path, e)),
    };
    Ok(Verified {
        archive_sha256: Some(sha256_hex(&bytes)),
        archive_signature,
        ..verified
    })
}

/// The key id a packet's `manifest.json.minisig` names, unverified: for messages only.
pub fn claimed_key_id(path: &Path) -> Option<KeyId> {
    let files = if path.is_dir() {
        read_dir(path).ok()?
    } else {
        read_zip(&std::fs::read(path).ok()?).ok()?.1
    };
    let sig = std::str::from_utf8(files.get(MANIFEST_MINISIG)?).ok()?;
    Some(minisign::Signature::parse(sig).ok()?.key_id)
}

/// A verification failure about `what`.
fn context(what: &str, e: Error) -> Error {
    match e {
        Error::Verify(m) => Error::Verify(format!("{what}: {m}")),
        e => Error::Verify(format!("{what}: {e}")),
    }
}

/// The report and tenant of a trusted comment, when it names them, are the manifest's.
fn check_identity(sig: &minisign::Signature, m: &Manifest, what: &str) -> Result<()> {
    for (field, want) in [("report", &m.report_id), ("tenant", &m.tenant_id)] {
        if let Some(got) = sig.trusted_field(field)
            && got != want
        {
            return Err(Error::Verify(format!(
                "{what}: its trusted comment names {field} {got}, the manifest {want}"
            )));
        }
    }
    Ok(())
}

fn verify_files(files: &BTreeMap<String, Vec<u8>>, trusted: &[PublicKey]) -> Result<Verified> {
    let manifest_bytes = files
        .get(MANIFEST)
        .ok_or_else(|| Error::Verify(format!("{MANIFEST} is missing")))?;
    let minisig = files.get(MANIFEST_MINISIG).ok_or_else(|| {
        Error::Verify(format!(
            "{MANIFEST_MINISIG} is missing: the packet has no minisign signature"
        ))
    })?;
    let sig = files
        .get(SIGNATURE)
        .ok_or_else(|| Error::Verify(format!("{SIGNATURE} is missing")))?;
    // The signature first, with a pinned key: nothing the packet says is believed before.
    let minisig = std::str::from_utf8(minisig)
        .map_err(|_| Error::Verify(format!("{MANIFEST_MINISIG} is not text")))?;
    let signed = minisign::verify(trusted, manifest_bytes, minisig)
        .map_err(|e| context(MANIFEST_MINISIG, e))?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| Error::Verify(format!("{MANIFEST} is not a packet manifest ({e})")))?;
    if manifest.format != MANIFEST_FORMAT || manifest.signer.algorithm != "ed25519" {
        return Err(Error::Verify(format!(
            "unsupported manifest format {} / algorithm {}",
            manifest.format, manifest.signer.algorithm
        )));
    }
    check_identity(&signed.signature, &manifest, MANIFEST_MINISIG)?;
    let digest = sha256(manifest_bytes);
    let sig =
        std::str::from_utf8(sig).map_err(|_| Error::Verify(format!("{SIGNATURE} is not text")))?;
    verify_digest(&signed.key.ed25519_base64(), &digest, sig).map_err(|e| context(SIGNATURE, e))?;
    let mut listed = std::collections::BTreeSet::new();
    for e in &manifest.files {
        if !safe_relative(&e.path) {
            return Err(Error::Verify(format!(
                "unsafe path {:?} in the manifest",
                e.path
            )));
        }
        let bytes = files
            .get(&e.path)
            .ok_or_else(|| Error::Verify(format!("{} is listed but missing", e.path)))?;
        let actual = sha256_hex(bytes);
        if actual != e.sha256 || bytes.len() as u64 != e.bytes {
            return Err(Error::Verify(format!(
                "{} changed: sha256 {} ({} bytes), manifest says {} ({} bytes)",
                e.path,
                actual,
                bytes.len(),
                e.sha256,
                e.bytes
            )));
        }
        listed.insert(e.path.as_str());
    }
    for name in files.keys() {
        if name != MANIFEST
            && name != SIGNATURE
            && name != MANIFEST_MINISIG
            && !listed.contains(name.as_str())
        {
            return Err(Error::Verify(format!(
                "{name} is not listed in the manifest"
            )));
        }
    }
    Ok(Verified {
        archive_sha256: None,
        manifest_sha256: hex::encode(digest),
        files: manifest.files.len(),
        manifest,
        signed_by: signed.key,
        trusted_comment: signed.signature.trusted_comment,
        archive_signature: None,
    })
}

fn read_dir(root: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let p = entry.path();
            let ty = entry.file_type().map_err(|e| Error::io(&p, e))?;
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .map_err(|_| Error::Verify(format!("{} escapes the packet", p.display())))?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                out.insert(rel, bytes);
            } else {
                return Err(Error::Verify(format!(
                    "{} is neither a file nor a directory",
                    p.display()
                )));
            }
        }
    }
    Ok(out)
}

fn read_zip(archive: &[u8]) -> Result<(String, BTreeMap<String, Vec<u8>>)> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(archive))?;
    let mut out = BTreeMap::new();
    let mut prefix: Option<String> = None;
    for i in 0..z.len() {
        let mut entry = z.by_index(i)?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_owned();
        let (top, rest) = name
            .split_once('/')
            .ok_or_else(|| Error::Verify(format!("{name} is outside the packet directory")))?;
        match &prefix {
            None => prefix = Some(top.to_owned()),
            Some(p) if p != top => {
                return Err(Error::Verify(format!(
                    "{name} is outside the packet directory {p}"
                )));
            }
            Some(_) => {}
        }
        if !safe_relative(rest) {
            return Err(Error::Verify(format!("unsafe entry name {name:?}")));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Verify(format!("{name}: {e}")))?;
        if out.insert(rest.to_owned(), bytes).is_some() {
            return Err(Error::Verify(format!("{name} appears twice")));
        }
    }
    let prefix = prefix.ok_or_else(|| Error::Verify("the archive is empty".into()))?;
    Ok((prefix, out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn packet(dir: &Path, signer: &Signer) -> Written {
        write(
            dir,
            &Meta {
                report_id: "r-1",
                tenant_id: "acme",
                report_type: "cso",
                generated_at: "2026-11-21T00:00:00.000Z".into(),
                key_id: "k",
            },
            vec![
                PacketFile::new("report.html", b"<html>42</html>".to_vec()),
                PacketFile::new("tables/findings.csv", b"a,b\r\n".to_vec()),
            ],
            signer,
        )
        .unwrap()
    }

    fn pin(signer: &Signer) -> Vec<PublicKey> {
        vec![PublicKey::new(signer.verifying_key())]
    }

    #[test]
    fn written_packets_verify_and_any_change_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = Signer::generate();
        let trusted = pin(&signer);
        let w = packet(tmp.path(), &signer);
        assert_eq!(w.dir, tmp.path().join("acme/r-1"));
        assert_eq!(w.manifest.files.len(), 2);
        assert_eq!(
            w.manifest.signer.minisign_key_id,
            trusted[0].key_id.to_string()
        );
        let v = verify(&w.dir, &trusted).unwrap();
        assert_eq!(
            (v.files, v.manifest_sha256.as_str()),
            (2, w.manifest_sha256.as_str())
        );
        assert_eq!(v.signed_by, trusted[0]);
        assert_eq!(
            v.trusted_comment,
            "timestamp:1795219200\tfile:manifest.json\thashed\treport:r-1\ttenant:acme"
        );
        let v = verify(&w.zip, &trusted).unwrap();
        assert_eq!(v.archive_signature.as_deref(), w.zip_minisig.as_deref());
        // Only a pinned key verifies: another key, or none, does not.
        let stranger = pin(&Signer::generate());
        let e = verify(&w.zip, &stranger).unwrap_err().to_string();
        assert!(e.contains("not a trusted key"), "{e}");
        let e = verify(&w.dir, &[]).unwrap_err().to_string();
        assert!(e.contains("no pinned public key"), "{e}");
        // A previous key among the pins still verifies what it signed.
        verify(&w.dir, &[stranger[0].clone(), trusted[0].clone()]).unwrap();
        assert_eq!(claimed_key_id(&w.zip), Some(trusted[0].key_id));

        // One changed byte in a file.
        let html = w.dir.join("report.html");
        let mut bytes = std::fs::read(&html).unwrap();
        bytes[6] ^= 1;
        std::fs::write(&html, &bytes).unwrap();
        let e = verify(&w.dir, &trusted).unwrap_err().to_string();
        assert!(e.contains("report.html changed"), "{e}");
        bytes[6] ^= 1;
        std::fs::write(&html, &bytes).unwrap();
        verify(&w.dir, &trusted).unwrap();

        // An extra file; a missing file; a changed manifest.
        std::fs::write(w.dir.join("extra.txt"), b"x").unwrap();
        assert!(
            verify(&w.dir, &trusted)
                .unwrap_err()
                .to_string()
                .contains("not listed")
        );
        std::fs::remove_file(w.dir.join("extra.txt")).unwrap();
        let csv = w.dir.join("tables/findings.csv");
        std::fs::remove_file(&csv).unwrap();
        assert!(
            verify(&w.dir, &trusted)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        std::fs::write(&csv, b"a,b\r\n").unwrap();
        // manifest.sig is covered too: another valid-looking signature fails.
        let sig_path = w.dir.join(SIGNATURE);
        let original_sig = std::fs::read(&sig_path).unwrap();
        std::fs::write(&sig_path, Signer::generate().sign_digest(&sha256(b"other"))).unwrap();
        let e = verify(&w.dir, &trusted).unwrap_err().to_string();
        assert!(e.contains("manifest.sig"), "{e}");
        std::fs::write(&sig_path, original_sig).unwrap();
        verify(&w.dir, &trusted).unwrap();
        let m = w.dir.join(MANIFEST);
        let text = std::fs::read_to_string(&m)
            .unwrap()
            .replace("\"cso\"", "\"ciso\"");
        std::fs::write(&m, text).unwrap();
        let e = verify(&w.dir, &trusted).unwrap_err().to_string();
        assert!(e.contains("does not match the data"), "{e}");
    }

    #[test]
    fn a_repacked_packet_signed_by_another_key_is_refused() {
        // The attacker changes the report and writes a complete, self-consistent packet with
        // their own key inside the manifest.
        let tmp = tempfile::tempdir().unwrap();
        let real = Signer::generate();
        let w = packet(tmp.path(), &real);
        let attacker = Signer::generate();
        let forged_root = tmp.path().join("forged");
        let forged = write(
            &forged_root,
            &Meta {
                report_id: "r-1",
                tenant_id: "acme",
                report_type: "cso",
                generated_at: "2026-11-21T00:00:00.000Z".into(),
                key_id: "k",
            },
            vec![
                PacketFile::new("report.html", b"<html>ready</html>".to_vec()),
                PacketFile::new("tables/findings.csv", b"a,b\r\n".to_vec()),
            ],
            &attacker,
        )
        .unwrap();
        assert_eq!(
            forged.manifest.signer.public_key,
            attacker.public_key_b64(),
            "the forgery carries its own key"
        );
        for p in [&forged.dir, &forged.zip] {
            let e = verify(p, &pin(&real)).unwrap_err().to_string();
            assert!(e.contains("not a trusted key"), "{e}");
        }
        // The forged archive's signature beside the real archive: refused as well.
        std::fs::copy(
            forged.zip_minisig.as_ref().unwrap(),
            w.zip_minisig.as_ref().unwrap(),
        )
        .unwrap();
        assert!(verify(&w.zip, &pin(&real)).is_err());
    }

    #[test]
    fn a_lone_archive_signature_is_a_partial_packet() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = Signer::generate();
        let w = packet(tmp.path(), &signer);
        std::fs::create_dir_all(tmp.path().join("acme/.r-2.tmp")).unwrap();
        std::fs::write(tmp.path().join("acme/r-3.zip.minisig"), "x").unwrap();
        assert_eq!(remove_partial(tmp.path()), 2);
        assert!(w.zip_minisig.as_ref().unwrap().exists());
        verify(&w.zip, &pin(&signer)).unwrap();
    }

    #[test]
    fn every_byte_of_the_zip_is_covered() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = Signer::generate();
        let trusted = pin(&signer);
        let w = packet(tmp.path(), &signer);
        let original = std::fs::read(&w.zip).unwrap();
        assert_eq!(sha256_hex(&original), w.zip_sha256);
        // Flip every byte in turn: each changed archive fails verification, with and without
        // its detached signature beside it.
        let p = tmp.path().join("t.zip");
        for i in 0..original.len() {
            let mut b = original.clone();
            b[i] ^= 0x20;
            std::fs::write(&p, &b).unwrap();
            assert!(
                verify(&p, &trusted).is_err(),
                "byte {i} of {} changed unnoticed",
                original.len()
            );
        }
        std::fs::write(&p, &original).unwrap();
        let v = verify(&p, &trusted).unwrap();
        assert_eq!(v.archive_sha256.as_deref(), Some(w.zip_sha256.as_str()));
        assert_eq!(v.archive_signature, None);
        std::fs::copy(w.zip_minisig.as_ref().unwrap(), archive_signature_path(&p)).unwrap();
        let v = verify(&p, &trusted).unwrap();
        assert!(v.archive_signature.is_some());
        let mut b = original.clone();
        b[0] ^= 0x20;
        std::fs::write(&p, &b).unwrap();
        assert!(verify(&p, &trusted).is_err());

        // Deterministic: the same content gives the same archive bytes.
        let tmp2 = tempfile::tempdir().unwrap();
        let w2 = packet(tmp2.path(), &signer);
        assert_eq!(w2.zip_sha256, w.zip_sha256);
    }
}
