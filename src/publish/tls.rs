//! TLS for `amqps://` broker URLs, through rustls (ring): no OpenSSL, so the packaged binaries
//! cross-build for glibc 2.17.
//!
//! Trust rule: with `broker.tls.ca_file`, the certificates in that file are the *only* trust
//! anchors (a certificate for the broker's name from any public CA is refused); without it, the
//! platform's roots (the distribution's CA bundle, read by rustls-platform-verifier). The
//! server's name is always checked against the URL's host. One rustls `ClientConfig` carries
//! the rule for both clients: the publisher's own ([`Tls::stream`], tokio-rustls) and lapin's
//! for `iemctl tail` ([`Tls::lapin_connection`]; lapin's own TLS setup adds `ca_file` to the
//! platform's roots instead of replacing them, so its socket is made here too).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use amq_protocol::uri::{AMQPScheme, AMQPUri};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::{Connection, ConnectionProperties};
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio::net::TcpStream;

use super::PublishError;
use super::wire::Io;
use crate::config::broker::BrokerConfig;

/// The TLS client configuration for a broker configuration: `None` when no URL is `amqps://`.
/// Built once (it parses the roots) and shared by every connection, which also lets rustls
/// resume sessions.
#[derive(Clone)]
pub(super) struct Tls(Option<Arc<ClientConfig>>);

impl Tls {
    pub(super) fn from_config(config: &BrokerConfig) -> Result<Tls, PublishError> {
        if !config.urls.iter().any(|u| u.starts_with("amqps://")) {
            return Ok(Tls(None));
        }
        let tls = config.tls.clone().unwrap_or_default();
        let error = |e: rustls::Error| PublishError::Tls(e.to_string());
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(error)?;
        let builder = match &tls.ca_file {
            // Not the platform verifier: these roots and no others.
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(certificates(path)?);
                if added == 0 {
                    return Err(PublishError::Tls(format!(
                        "{}: no usable CA certificate in it",
                        path.display()
                    )));
                }
                builder.with_root_certificates(roots)
            }
            None => builder.with_platform_verifier().map_err(error)?,
        };
        let client = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                    .map_err(|e| PublishError::Tls(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(certificates(cert)?, key_der)
                    .map_err(error)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Tls(Some(Arc::new(client))))
    }

    /// A socket to the broker of `uri`, secured for `amqps://` (the certificate checked against
    /// the URL's host), for the publisher's own client.
    pub(super) async fn stream(&self, uri: &AMQPUri) -> std::io::Result<Box<dyn Io>> {
        let host = uri.authority.host.as_str();
        let tcp = TcpStream::connect((host, uri.authority.port)).await?;
        // Frames are batched by the publisher: a write is a whole batch, never to be delayed.
        tcp.set_nodelay(true)?;
        match (&uri.scheme, &self.0) {
            (AMQPScheme::AMQP, _) => Ok(Box::new(tcp)),
            (AMQPScheme::AMQPS, Some(client)) => {
                let name = server_name(host)?;
                let tls = tokio_rustls::TlsConnector::from(client.clone())
                    .connect(name, tcp)
                    .await?;
                Ok(Box::new(tls))
            }
            // from_config builds a client whenever a URL is amqps://.
            (AMQPScheme::AMQPS, None) => Err(std::io::Error::other(
                "amqps:// URL without a TLS configuration",
            )),
        }
    }

    /// A lapin connection to `uri` over a socket this module opened (and, for `amqps://`,
    /// secured): `iemctl tail`.
    pub(super) async fn lapin_connection(&self, uri: AMQPUri) -> lapin::Result<Connection> {
        let runtime = lapin::runtime::default_runtime()?;
        let tls = self.0.clone().map(RustlsConnector::from);
        Connection::connector(
            uri,
            runtime,
            async move |uri: AMQPUri, runtime| {
                let host = uri.authority.host.as_str();
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, uri.authority.port))
                    .await?
                    .collect();
                let stream = AsyncTcpStream::connect(&runtime, addrs).await?;
                match (uri.scheme, &tls) {
                    (AMQPScheme::AMQP, _) => Ok(stream),
                    (AMQPScheme::AMQPS, Some(connector)) => {
                        Ok(stream.into_rustls(connector, host).await?)
                    }
                    (AMQPScheme::AMQPS, None) => {
                        Err(std::io::Error::other("amqps:// URL without a TLS connector").into())
                    }
                }
            },
            ConnectionProperties::default(),
        )
        .await
    }
}

/// The URL's host as the name the certificate must carry (an IP address is checked as one).
fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    let bare = host.trim_matches(|c| c == '[' || c == ']');
    ServerName::try_from(bare.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a host name for TLS: {e}"),
        )
    })
}

fn read(path: &Path) -> Result<Vec<u8>, PublishError> {
    std::fs::read(path).map_err(|e| PublishError::Tls(format!("{}: {e}", path.display())))
}

/// Every certificate in a PEM file; a file with none is an error.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PublishError> {
    let shown = path.display();
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PublishError::Tls(format!("{shown}: {e}")))?;
    if certs.is_empty() {
        return Err(PublishError::Tls(format!("{shown}: no CERTIFICATE in it")));
    }
    Ok(certs)
}
