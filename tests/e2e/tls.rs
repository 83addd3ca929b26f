//! The HTTPS path: a provider behind TLS, trusted through `ca_file`.

use crate::support::*;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

/// A TLS front for `mock` with a fresh self-signed certificate for
/// `localhost`; returns its port and the certificate PEM.
async fn tls_front(mock: &MockProvider) -> (u16, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = mock.addr;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Relay decrypted HTTP to the plain mock.
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = format!("http://{backend}{}", parts.uri.path()).parse().unwrap();
                    let client =
                        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
                    client.request(http::Request::from_parts(parts, body)).await
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, pem)
}

#[tokio::test]
async fn reaches_an_https_provider_trusted_by_ca_file() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let (port, pem) = tls_front(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let config = two_providers(&a, &b, "").replacen(
        &format!("base_url = \"{}\"", a.url()),
        &format!(
            "base_url = \"https://localhost:{port}/v1\"\nca_file = \"{}\"",
            ca.display()
        ),
        1,
    );
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-switchboard-provider"), "a");
    assert_eq!(a.seen()[0].headers["authorization"], "Bearer secret-key-a");
}

#[tokio::test]
async fn refuses_an_https_provider_with_an_untrusted_certificate() {
    let (a, b) = (MockProvider::start("a").await, MockProvider::start("b").await);
    let (port, _pem) = tls_front(&a).await;
    let config = two_providers(&a, &b, "").replacen(
        &format!("base_url = \"{}\"", a.url()),
        &format!("base_url = \"https://localhost:{port}/v1\""),
        1,
    );
    let gw = Gateway::start(&config, KEYS);
    let reply = post(&gw.chat_url(), &chat("chat")).await;
    assert_eq!(
        reply.header("x-switchboard-provider"),
        "b",
        "an untrusted certificate fails the attempt"
    );
    assert_eq!(a.hits(), 0, "no credential was sent to it");
}
