//! `aispm-reporter`: the report service, `keygen` and `verify`.

use aispm_reporter::{Config, keys, minisign, packet, run, sign};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Signed report packets for AISPM tenants, delivered by SMTP or export, with delivery audit
/// events. Without a subcommand, runs the service.
#[derive(Debug, Parser)]
#[command(
    name = "aispm-reporter",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its minisign public key file
    /// (`<out>.pub`), and prints the key id, the minisign public key (what verifiers pin) and the
    /// base64 public key (to register as a trust_root asset).
    Keygen {
        /// Where to write the private key; never overwritten.
        #[arg(long, default_value = "aispm-reporter-key.pem")]
        out: PathBuf,
    },
    /// Verifies a packet (its directory or its .zip) against a pinned public key: the minisign
    /// signature of manifest.json (and of the .zip, when `<zip>.minisig` lies beside it), the
    /// SHA-256 of every file, no file missing or added, and for a .zip every byte. Never trusts
    /// the key the packet carries: without a pinned key it refuses. Exits 0 when the packet is
    /// intact and signed by a pinned key, 1 when it is not, 2 without a usable pin.
    Verify {
        /// The packet directory or .zip.
        packet: PathBuf,
        /// A pinned key: a minisign public key string (`RW...`), a file holding one (such as
        /// the reporter's `aispm-reporter.pub`), or the base64 Ed25519 key of a trust_root.
        /// Repeatable (comma-separated in the environment).
        #[arg(
            long = "public-key",
            env = "AISPM_REPORTER_PUBLIC_KEY",
            value_delimiter = ','
        )]
        public_keys: Vec<String>,
        /// A file of pinned keys (current and previous): the reporter's `signing-keys.json`, or
        /// one minisign public key per line (`.pub` files concatenated; `#` comments).
        #[arg(long, env = "AISPM_REPORTER_KEYS_FILE")]
        keys_file: Option<PathBuf>,
        /// Require the .zip's SHA-256 to be this (the delivery event's packet_sha256).
        #[arg(long)]
        sha256: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            let common = cli.config.common.clone();
            let config = cli.config;
            aispm_runtime::service::main("reporter", &common, |shutdown| run(config, shutdown))
        }
        Some(Command::Keygen { out }) => keygen(&out),
        Some(Command::Verify {
            packet,
            public_keys,
            keys_file,
            sha256,
        }) => verify(
            &packet,
            &public_keys,
            keys_file.as_deref(),
            sha256.as_deref(),
        ),
    }
}

fn keygen(out: &Path) -> ExitCode {
    let signer = sign::Signer::generate();
    let public = minisign::PublicKey::new(signer.verifying_key());
    let public_file = out.with_extension("pub");
    let result = signer.write_private(out).and_then(|()| {
        std::fs::write(&public_file, public.file())
            .map_err(|e| aispm_reporter::Error::io(&public_file, e))
    });
    match result {
        Ok(()) => {
            println!("private key: {}", out.display());
            println!("public key:  {} (minisign)", public_file.display());
            println!("key id: {}", public.key_id);
            println!("minisign public key (pin it): {}", public.encode());
            println!(
                "public_key (base64, for a trust_root asset): {}",
                signer.public_key_b64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keygen failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a refusal for want of a usable pin.
const REFUSED: u8 = 2;

fn verify(
    path: &Path,
    public_keys: &[String],
    keys_file: Option<&Path>,
    sha256: Option<&str>,
) -> ExitCode {
    let mut pinned = Vec::new();
    for k in public_keys.iter().filter(|k| !k.trim().is_empty()) {
        match keys::pin(k) {
            Ok(key) => pinned.push(key),
            Err(e) => {
                eprintln!("REFUSED: {e}");
                return ExitCode::from(REFUSED);
            }
        }
    }
    if let Some(file) = keys_file {
        match keys::keys_file(file) {
            Ok(keys) => pinned.extend(keys),
            Err(e) => {
                eprintln!("REFUSED: --keys-file: {e}");
                return ExitCode::from(REFUSED);
            }
        }
    }
    if pinned.is_empty() {
        let claimed = packet::claimed_key_id(path)
            .map(|id| {
                format!(" The packet says it is signed by key id {id}; that claim is not evidence.")
            })
            .unwrap_or_default();
        eprintln!(
            "REFUSED: {}: no pinned public key, so nothing is verified. A packet is checked only \
             against a key you trust, never the one it carries. Pin the reporter's key with \
             --public-key <minisign public key or .pub file>, AISPM_REPORTER_PUBLIC_KEY, or \
             --keys-file <file> (the reporter publishes its keys at GET /v1/signing-keys and in \
             <out-dir>/signing-keys.json; get them from your operator, not from the packet).{claimed}",
            path.display()
        );
        return ExitCode::from(REFUSED);
    }
    match packet::verify(path, &pinned) {
        Ok(v) => {
            if let Some(want) = sha256 {
                match &v.archive_sha256 {
                    Some(got) if got.eq_ignore_ascii_case(want.trim()) => {}
                    Some(got) => {
                        eprintln!(
                            "FAILED: {}: archive sha256 {got}, expected {want}",
                            path.display()
                        );
                        return ExitCode::FAILURE;
                    }
                    None => {
                        eprintln!("FAILED: --sha256 applies to a .zip, not a directory");
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!(
                "OK: {} is intact: report {} ({}) for tenant {}, {} files, manifest sha256 {}, signed by pinned key {} (trust_root key id {})",
                path.display(),
                v.manifest.report_id,
                v.manifest.report_type,
                v.manifest.tenant_id,
                v.files,
                v.manifest_sha256,
                v.signed_by.key_id,
                v.manifest.signer.key_id,
            );
            println!("trusted comment: {}", v.trusted_comment);
            if let Some(a) = v.archive_sha256 {
                println!("archive sha256 {a}");
            }
            if let Some(s) = v.archive_signature {
                println!("archive signature {} verified", s.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
