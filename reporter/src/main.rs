//! `aispm-reporter`: the report service, `keygen` and `verify`.

use aispm_reporter::{Config, packet, run, sign};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    /// Creates an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its public key
    /// (`<out>.pub`), and prints the base64 public key to register as a trust_root asset.
    Keygen {
        /// Where to write the private key; never overwritten.
        #[arg(long, default_value = "aispm-reporter-key.pem")]
        out: PathBuf,
    },
    /// Verifies a packet (its directory or its .zip): the Ed25519 signature over the manifest,
    /// the SHA-256 of every file, no file missing or added, and for a .zip every byte.
    /// Exits 0 when the packet is intact, 1 otherwise.
    Verify {
        /// The packet directory or .zip.
        packet: PathBuf,
        /// Require this signer (base64 Ed25519 public key, as registered in the trust_root).
        #[arg(long)]
        public_key: Option<String>,
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
            public_key,
            sha256,
        }) => verify(&packet, public_key.as_deref(), sha256.as_deref()),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    let signer = sign::Signer::generate();
    let public = out.with_extension("pub");
    let result = signer.write_private(out).and_then(|()| {
        let pem = signer.public_pem()?;
        std::fs::write(&public, pem).map_err(|e| aispm_reporter::Error::io(&public, e))
    });
    match result {
        Ok(()) => {
            println!("private key: {}", out.display());
            println!("public key:  {}", public.display());
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

fn verify(path: &std::path::Path, public_key: Option<&str>, sha256: Option<&str>) -> ExitCode {
    match packet::verify(path, public_key) {
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
                "OK: {} is intact: report {} ({}) for tenant {}, {} files, manifest sha256 {}, signed by key {} ({})",
                path.display(),
                v.manifest.report_id,
                v.manifest.report_type,
                v.manifest.tenant_id,
                v.files,
                v.manifest_sha256,
                v.manifest.signer.key_id,
                v.manifest.signer.public_key
            );
            if let Some(a) = v.archive_sha256 {
                println!("archive sha256 {a}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
