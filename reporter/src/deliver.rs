//! Delivery: a real mail with the packet attached, sent over SMTP to the tenant's approved
//! recipients, or, without an SMTP server, export of the packet to the packet directory.
//!
//! A delivery counts as delivered only when the SMTP server accepted the message (a positive
//! reply to the data) or, for export, when the packet on disk verifies; anything else is a
//! failure with its reason, which the caller records and retries.

use crate::minisign::PublicKey;
use crate::packet;
use crate::store::ReportRecord;
use aispm_schemas::DeliveryChannel;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// A successful delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub recipients: Vec<String>,
    pub message_id: Option<String>,
    pub server_response: Option<String>,
}

/// How packets leave the reporter.
#[derive(Clone)]
pub(crate) enum Channel {
    Smtp(Box<Smtp>),
    Export,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Channel::Smtp(s) => write!(f, "Smtp({})", s.server),
            Channel::Export => f.write_str("Export"),
        }
    }
}

impl Channel {
    pub(crate) fn kind(&self) -> DeliveryChannel {
        match self {
            Channel::Smtp(_) => DeliveryChannel::Smtp,
            Channel::Export => DeliveryChannel::Export,
        }
    }
}

/// An SMTP transport and the sender's address.
#[derive(Clone)]
pub(crate) struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The server, without credentials, for logs.
    server: String,
    timeout: Duration,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Smtp {
    /// From `--smtp-url` and `--smtp-from`.
    pub(crate) fn new(url: &str, from: &str, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("--smtp-from '{from}': {e}"))?;
        let server = url
            .split_once("://")
            .map(|(scheme, rest)| {
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("{scheme}://{}", host.split('?').next().unwrap_or(host))
            })
            .unwrap_or_else(|| "smtp".to_owned());
        Ok(Smtp {
            transport,
            from,
            server,
            timeout,
        })
    }

    /// The server, without credentials (`smtp://host:port`).
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// The From address.
    pub(crate) fn from(&self) -> String {
        self.from.to_string()
    }

    /// Sends the packet of `r` to `recipients` as attempt `attempt`.
    pub(crate) async fn send(
        &self,
        r: &ReportRecord,
        recipients: &[String],
        attempt: i32,
    ) -> Result<Delivered, String> {
        if recipients.is_empty() {
            return Err(
                "no approved recipients: register a report_provider asset with recipients for the tenant"
                    .into(),
            );
        }
        let zip = tokio::fs::read(&r.packet.zip)
            .await
            .map_err(|e| format!("reading {}: {e}", r.packet.zip.display()))?;
        let domain = self.from.email.domain().to_owned();
        let message_id = format!("<{}.{attempt}@{domain}>", r.id);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!(
                "[aispm] {} for {}: {}",
                r.title, r.tenant_id, r.headline
            ))
            .message_id(Some(message_id.clone()))
            .user_agent(format!("aispm-reporter {}", env!("CARGO_PKG_VERSION")));
        for to in recipients {
            let mb: Mailbox = to
                .parse()
                .map_err(|e| format!("recipient '{to}' is not an address: {e}"))?;
            builder = builder.to(mb);
        }
        let body = body(r);
        let zip_type = ContentType::parse("application/zip").map_err(|e| e.to_string())?;
        let mut parts = MultiPart::mixed()
            .singlepart(SinglePart::plain(body))
            .singlepart(Attachment::new(format!("{}.zip", r.id)).body(zip, zip_type));
        // The archive's minisign signature, under the name `minisign -V` looks for.
        if let Some(sig_path) = &r.packet.zip_minisig {
            let sig = tokio::fs::read(sig_path)
                .await
                .map_err(|e| format!("reading {}: {e}", sig_path.display()))?;
            // Bytes as they are (base64 on the wire), so no mail system rewrites its line ends.
            let sig_type =
                ContentType::parse("application/octet-stream").map_err(|e| e.to_string())?;
            parts = parts
                .singlepart(Attachment::new(format!("{}.zip.minisig", r.id)).body(sig, sig_type));
        }
        let message = builder
            .multipart(parts)
            .map_err(|e| format!("building the message: {e}"))?;
        let sent = tokio::time::timeout(self.timeout, self.transport.send(message))
            .await
            .map_err(|_| format!("{}: no answer within {:?}", self.server, self.timeout))?
            .map_err(|e| format!("{}: {e}", self.server))?;
        if !sent.is_positive() {
            return Err(format!("{}: {}", self.server, response_text(&sent)));
        }
        Ok(Delivered {
            recipients: recipients.to_vec(),
            message_id: Some(message_id),
            server_response: Some(response_text(&sent)),
        })
    }
}

/// The mail's text: the summary, the packet's hashes, the signing key's fingerprint and how to
/// check the packet against a key the recipient pinned.
fn body(r: &ReportRecord) -> String {
    let signer = &r.packet.manifest.signer;
    let name = format!("{}.zip", r.id);
    let mut text = format!(
        "{title} for tenant {tenant}\n\n{headline}\n\nReport id: {id}\nGenerated: {at}\nPacket: {name} (SHA-256 {sha})\nManifest SHA-256: {msha}\n",
        title = r.title,
        tenant = r.tenant_id,
        headline = r.headline,
        id = r.id,
        at = r.created_at,
        sha = r.packet.zip_sha256,
        msha = r.packet.manifest_sha256,
    );
    if signer.minisign_key_id.is_empty() {
        text.push_str(&format!(
            "Signed with Ed25519, key id {} (public key {}).\n",
            signer.key_id, signer.public_key
        ));
    } else {
        text.push_str(&format!(
            "Signed with minisign (Ed25519) by the aispm reporter's key {fp}.\n\n\
             Check that {fp} is the key id of the reporter key you pinned (from your operator, or\n\
             GET /v1/signing-keys); never trust a key that arrives with the packet. Then verify,\n\
             with {name}.minisig beside {name}:\n  \
             minisign -Vm {name} -P <pinned minisign public key>\n\
             or, with aispm:\n  \
             aispm-reporter verify {name} --public-key <pinned minisign public key>\n",
            fp = signer.minisign_key_id,
        ));
    }
    text.push_str("\nOpen report.html in a browser.\n");
    text
}

fn response_text(r: &lettre::transport::smtp::response::Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" "))
}

/// Export: the packet is already in the packet directory; it counts as delivered when it
/// verifies there (directory and archive) against the reporter's published `keys`.
pub(crate) async fn export(r: &ReportRecord, keys: Vec<PublicKey>) -> Result<Delivered, String> {
    let dir = r.packet.dir.clone();
    let zip = r.packet.zip.clone();
    let expected = r.packet.zip_sha256.clone();
    tokio::task::spawn_blocking(move || {
        packet::verify(&dir, &keys).map_err(|e| e.to_string())?;
        let v = packet::verify(&zip, &keys).map_err(|e| e.to_string())?;
        if v.archive_sha256.as_deref() != Some(expected.as_str()) {
            return Err("the exported archive is not the one generated".to_owned());
        }
        Ok(Delivered {
            recipients: vec![zip.display().to_string()],
            message_id: None,
            server_response: Some(format!("exported to {}", zip.display())),
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_and_server_names_hide_credentials() {
        let s = Smtp::new(
            "smtp://user:secret@127.0.0.1:2525",
            "aispm <r@acme.example>",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(s.server, "smtp://127.0.0.1:2525");
        assert!(!format!("{:?}", Channel::Smtp(Box::new(s))).contains("secret"));
        assert!(Smtp::new("ftp://x", "a <a@b.c>", Duration::from_secs(1)).is_err());
        assert!(
            Smtp::new(
                "smtp://127.0.0.1:25",
                "not an address",
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
