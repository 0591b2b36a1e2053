//! TLS for `amqps://` broker URLs, through rustls (ring): no OpenSSL, so the packaged binaries
//! cross-build for glibc 2.17.
//!
//! Trust rule: with `broker.tls.ca_file`, the certificates in that file are the *only* trust
//! anchors (a certificate for the broker's name from any public CA is refused); without it, the
//! platform's roots (the distribution's CA bundle, read by rustls-platform-verifier). The
//! server's name is always checked against the URL's host.
//!
//! lapin's own TLS setup adds `ca_file` to the platform's roots instead of replacing them, so
//! the TCP connection and the handshake are made here and handed to `Connection::connector`.

use std::net::SocketAddr;
use std::path::Path;

use lapin::tcp::{AsyncTcpStream, RustlsConnector, RustlsConnectorConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::PublishError;
use crate::config::broker::BrokerConfig;

/// The TLS connector for a broker configuration: `None` when no URL is `amqps://`. Built once
/// (it parses the roots) and cloned per connection, which also lets rustls resume sessions.
#[derive(Clone)]
pub(super) struct Tls(Option<RustlsConnector>);

impl Tls {
    pub(super) fn from_config(config: &BrokerConfig) -> Result<Tls, PublishError> {
        if !config.urls.iter().any(|u| u.starts_with("amqps://")) {
            return Ok(Tls(None));
        }
        let tls = config.tls.clone().unwrap_or_default();
        let roots = match &tls.ca_file {
            // Not the platform verifier: a default config trusts only what is added to it.
            Some(path) => {
                RustlsConnectorConfig::default().with_parsable_certificates(certificates(path)?)
            }
            None => RustlsConnectorConfig::new_with_platform_verifier(),
        };
        let connector = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                    .map_err(|e| PublishError::Tls(format!("{}: {e}", key.display())))?;
                roots.connector_with_single_cert(certificates(cert)?, key_der)
            }
            _ => roots.connector_with_no_client_auth(),
        }
        .map_err(|e| PublishError::Tls(e.to_string()))?;
        Ok(Tls(Some(connector)))
    }

    /// An AMQP connection over a socket this module opened (and, for `amqps://`, secured).
    pub(super) async fn connect(&self, uri: AMQPUri) -> lapin::Result<Connection> {
        let runtime = lapin::runtime::default_runtime()?;
        let tls = self.0.clone();
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
                    // from_config builds a connector whenever a URL is amqps://.
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
