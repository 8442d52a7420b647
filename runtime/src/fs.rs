//! Durable files: a write that a crash or a power loss leaves either whole or absent.
//!
//! A rename is atomic but not durable until the directory holding the new name is synced: a
//! power loss after `rename` returns can bring back the old name (or nothing). So every rename
//! here is followed by an fsync of the target's directory, and the contents are synced before
//! the rename.

use std::io::Write;
use std::path::Path;

/// Syncs a directory's entries (names created, renamed or removed in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Renames `from` to `to`, then syncs the directories of both names, so the rename survives a
/// power loss.
pub fn rename_durable(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    let to_dir = parent(to);
    sync_dir(to_dir)?;
    let from_dir = parent(from);
    if from_dir != to_dir {
        sync_dir(from_dir)?;
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` and syncs it (no rename: for a file inside a
/// directory that is itself renamed into place with [`rename_durable`]).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably: a synced temporary file beside it,
/// renamed over it, the directory synced. Readers see the old contents or the new, never a
/// part, after a crash or a power loss too.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    write_synced(&tmp, bytes)?;
    rename_durable(&tmp, path)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_durable_rename_moves_directories_too() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".r-1.tmp");
        std::fs::create_dir(&tmp).unwrap();
        write_synced(&tmp.join("a.txt"), b"a").unwrap();
        rename_durable(&tmp, &dir.path().join("r-1")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("r-1/a.txt")).unwrap(), b"a");
    }
}
