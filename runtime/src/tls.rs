//! HTTPS for every service: rustls with the certificate and key of `--tls-cert` and
//! `--tls-key`, re-read when the files change, so a renewed certificate (cert-manager, an ACME
//! client, a rotated secret) takes effect without a restart.
//!
//! Every new handshake asks [`Reloading`] for the current certificate; a watcher re-reads the
//! files when their size or modification time changes. A replacement that does not parse, or
//! whose key does not match its certificate, is refused: the previous certificate keeps being
//! served, the error is logged and counted (`aispm_<svc>_tls_reloads_total{outcome}`).

use crate::metrics::Metrics;
use crate::{Error, Result};
use prometheus::IntCounterVec;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks at the files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The certificate served now, swapped when the files change.
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// What the watcher compares to notice a change (rename-into-place and in-place writes both
/// change one of them).
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let c = std::fs::metadata(cert).ok()?;
    let k = std::fs::metadata(key).ok()?;
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

/// Reads a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1) and checks that the
/// key belongs to the first certificate.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let tls = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls("reading the certificate", cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls("reading the certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(tls(
            "reading the certificate",
            cert,
            &"no CERTIFICATE block",
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("reading the key", key, &e))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| tls("loading the key", key, &e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| tls("matching the key to the certificate", cert, &e))?;
    Ok(certified)
}

impl Reloading {
    /// Loads the files once; an error here stops the service from starting.
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Reloading>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load(cert, key, &provider)?;
        Ok(Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// The acceptor for new connections: TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-reads the files whenever they change, until `shutdown`.
    pub async fn watch(self: Arc<Self>, metrics: Metrics, shutdown: CancellationToken) {
        let reloads = metrics
            .counter(
                "tls_reloads_total",
                "Certificate reloads after the files changed, by outcome.",
                &["outcome"],
            )
            .ok();
        let count = |c: &Option<IntCounterVec>, outcome: &str| {
            if let Some(c) = c {
                c.with_label_values(&[outcome]).inc();
            }
        };
        let mut seen = stamp(&self.cert, &self.key);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RELOAD_CHECK) => {}
            }
            let now = stamp(&self.cert, &self.key);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&self.cert, &self.key, &self.provider) {
                Ok(certified) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                    count(&reloads, "ok");
                    tracing::info!(cert = %self.cert.display(), "Reloaded the TLS certificate.");
                }
                Err(e) => {
                    count(&reloads, "refused");
                    tracing::error!(error = %e, "The new TLS certificate or key is unusable; still serving the previous one.");
                }
            }
        }
    }
}

/// The flag of every HTTP client aispm runs (the console, the validators, `emit`): a private CA
/// to trust beside the public roots, for services serving a certificate of their own CA.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// A PEM file of CA certificates to trust for https:// URLs, beside the public roots
    /// (the CA that signed the services' `--tls-cert`). Verification is never turned off.
    #[arg(long, env = "AISPM_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// A client builder that trusts `--ca-cert` too.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| Error::Tls(format!("reading the CA {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Tls(format!("the CA {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(Error::Tls(format!(
                    "the CA {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }
}
