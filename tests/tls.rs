//! TLS trust for `amqps://` (issue 14 item 4): with `broker.tls.ca_file` only that CA is
//! trusted; without it, the platform's roots.
//!
//! Two local CAs sign certificates for `localhost`; a TLS front (rustls) terminates the
//! connection and forwards it to the test broker, so an accepted handshake goes on to a real
//! AMQP session. `iemctl tail` is the client: it connects with the publisher's TLS setup, and
//! runs as a child so that `SSL_CERT_FILE` can stand in for the platform's CA bundle.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto::ring};

use crate::util::{self, broker_lock};

/// A self-signed CA.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Starts a TLS front on 127.0.0.1 presenting a `localhost` certificate signed by `ca`, which
/// forwards every connection to the test broker. Returns its port.
async fn tls_front(ca: &CertifiedIssuer<'static, KeyPair>) -> u16 {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = std::env::var("IEMD_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, broker) = (acceptor.clone(), broker.clone());
            tokio::spawn(async move {
                // A refused handshake ends here; the client reports why.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(&broker).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    port
}

/// How `iemctl tail` ended up: connected (it says it is waiting for alerts), or refused with
/// its error output.
#[derive(Debug)]
enum Outcome {
    Connected,
    Refused(String),
}

/// Runs `iemctl tail` against `amqps://localhost:port` with `ca_file` (if any) and
/// `SSL_CERT_FILE` standing for the platform's CA bundle.
async fn tail(dir: &Path, port: u16, ca_file: Option<&Path>, platform: &Path) -> Outcome {
    let config = dir.join(format!("tail-{port}-{}.toml", ca_file.is_some()));
    let mut text = format!("[broker]\nurls = [\"amqps://localhost:{port}/%2f\"]\n");
    if let Some(ca) = ca_file {
        text.push_str(&format!("[broker.tls]\nca_file = \"{}\"\n", ca.display()));
    }
    std::fs::write(&config, text).unwrap();
    let stderr = dir.join(format!("tail-{port}-{}.err", ca_file.is_some()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_iemctl"))
        .args(["tail", "--exchange", "amq.topic", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", platform)
        .env_remove("SSL_CERT_DIR")
        .env_remove("IEMD_AMQP_USER")
        .env_remove("IEMD_AMQP_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let outcome = loop {
        let said = std::fs::read_to_string(&stderr).unwrap_or_default();
        if said.contains("waiting for alerts") {
            break Outcome::Connected;
        }
        if child.try_wait().unwrap().is_some() {
            break Outcome::Refused(std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "iemctl tail neither connected nor failed within 30 s:\n{said}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Regression (issue 14): `ca_file` was added to the platform's roots instead of replacing
/// them, so a certificate for the broker's name from any CA the platform trusts was accepted.
/// Now a certificate from a CA the platform trusts is refused when `ca_file` names another,
/// and without `ca_file` the platform's roots decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_is_the_only_trust_anchor_and_without_it_the_platform_roots_are() {
    const TEST: &str = "ca_file_is_the_only_trust_anchor_and_without_it_the_platform_roots_are";
    if !util::broker_available(TEST) {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let (ours, public) = (ca("iemd test: our CA"), ca("iemd test: a public CA"));
    let ours_pem = dir.path().join("ours.pem");
    let public_pem = dir.path().join("public.pem");
    std::fs::write(&ours_pem, ours.pem()).unwrap();
    std::fs::write(&public_pem, public.pem()).unwrap();
    let ours_front = tls_front(&ours).await;
    let public_front = tls_front(&public).await;
    let d = dir.path();

    // ca_file = our CA: the broker's certificate from our CA is accepted ...
    let got = tail(d, ours_front, Some(&ours_pem), &public_pem).await;
    assert!(matches!(got, Outcome::Connected), "{got:?}");
    // ... and one from a CA the platform trusts is refused.
    match tail(d, public_front, Some(&ours_pem), &public_pem).await {
        Outcome::Refused(err) => assert!(err.contains("UnknownIssuer"), "{err}"),
        Outcome::Connected => panic!("a certificate from outside ca_file was accepted"),
    }
    // No ca_file: the platform's roots.
    let got = tail(d, public_front, None, &public_pem).await;
    assert!(matches!(got, Outcome::Connected), "{got:?}");
    match tail(d, ours_front, None, &public_pem).await {
        Outcome::Refused(err) => assert!(err.contains("UnknownIssuer"), "{err}"),
        Outcome::Connected => {
            panic!("a certificate from outside the platform's roots was accepted")
        }
    }
}

/// The publisher's own client (`publish::wire` over tokio-rustls) keeps the same rule: through
/// a front whose certificate comes from `ca_file`'s CA, alerts are delivered; through one from
/// another CA, the handshake is refused and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_trusts_ca_file_and_nothing_else() {
    const TEST: &str = "the_publisher_trusts_ca_file_and_nothing_else";
    if !util::broker_available(TEST) {
        return;
    }
    let _broker = broker_lock::shared();
    let dir = tempfile::tempdir().unwrap();
    let (ours, other) = (ca("iemd test: our CA"), ca("iemd test: another CA"));
    let ours_pem = dir.path().join("ours.pem");
    std::fs::write(&ours_pem, ours.pem()).unwrap();
    let ours_front = tls_front(&ours).await;
    let other_front = tls_front(&other).await;
    let records: Vec<iemd::spool::Record> = (1..=20u64)
        .map(|seq| iemd::spool::Record {
            seq,
            time_ms: 0,
            payload: crate::publish::alert_json(seq),
        })
        .collect();
    let config = |port: u16| iemd::config::broker::BrokerConfig {
        urls: vec![format!("amqps://localhost:{port}/%2f")],
        tls: Some(
            toml::from_str(&format!("ca_file = {:?}", ours_pem.display().to_string())).unwrap(),
        ),
        ..crate::publish::broker_config("tls-publish")
    };
    let trusted = config(ours_front);
    let report = iemd::publish::send_records(&trusted, &records, |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.delivered, report.failed), (20, vec![]));
    let queue = trusted.queue.clone().unwrap().name;
    assert_eq!(
        crate::util::amqp::drain_ids(&queue, Duration::from_secs(1))
            .await
            .len(),
        20
    );
    let err = iemd::publish::send_records(&config(other_front), &records, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}
