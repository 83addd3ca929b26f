//! The provider HTTP client: owns every socket, applies the base URL and the
//! credential to a request an adapter described, and enforces body limits.

use crate::plugin::types::{CredentialPlacement, OutboundRequest};
use crate::redact::{Redactor, percent_encode};
use crate::secret::Secret;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Headers an adapter may not set: the host owns framing, credentials and
/// the encoding (answers must come uncompressed, or scrubbing them for an
/// echoed credential would look at compressed bytes).
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "authorization",
    "accept-encoding",
];

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not connect to the provider: {0}")]
    Connect(String),
    #[error("the provider connection failed: {0}")]
    Io(String),
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider's answer exceeded {0} bytes")]
    TooLarge(usize),
    #[error("the adapter built an invalid request: {0}")]
    InvalidRequest(String),
}

/// One provider's connection pool and endpoint.
pub struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    base_url: String,
    max_response_bytes: usize,
    /// Scrubs our credentials from what the provider sends back.
    redactor: Arc<Redactor>,
}

impl Upstream {
    pub fn new(
        base_url: String,
        connect_timeout: Duration,
        ca_file: Option<&Path>,
        max_response_bytes: usize,
        redactor: Arc<Redactor>,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(file) = ca_file {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", file.display()))?;
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Upstream {
            client,
            base_url,
            max_response_bytes,
            redactor,
        })
    }

    /// Send the request; resolves when the response headers arrive.
    pub async fn send(
        &self,
        request: &OutboundRequest,
        credential: Option<&Secret>,
    ) -> Result<http::Response<Incoming>, TransportError> {
        let invalid = |e: &dyn std::fmt::Display| TransportError::InvalidRequest(e.to_string());
        if !request.path.starts_with('/') {
            return Err(invalid(&format!(
                "path {:?} does not start with '/'",
                request.path
            )));
        }
        let mut uri = format!("{}{}", self.base_url, request.path);
        let mut builder = http::Request::builder()
            .method(http::Method::from_bytes(request.method.as_bytes()).map_err(|e| invalid(&e))?);
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(&e))?;
            if RESERVED.contains(&name.as_str()) {
                continue;
            }
            builder = builder.header(name, HeaderValue::from_str(value).map_err(|e| invalid(&e))?);
        }
        builder = builder.header(http::header::ACCEPT_ENCODING, "identity");
        if let Some(secret) = credential {
            match &request.credential {
                CredentialPlacement::Bearer => {
                    let mut value =
                        HeaderValue::from_str(&format!("Bearer {}", secret.expose())).map_err(|_| {
                            TransportError::InvalidRequest("credential is not a valid header value".into())
                        })?;
                    value.set_sensitive(true);
                    builder = builder.header(http::header::AUTHORIZATION, value);
                }
                CredentialPlacement::Header(name) => {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(&e))?;
                    let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                        TransportError::InvalidRequest("credential is not a valid header value".into())
                    })?;
                    value.set_sensitive(true);
                    builder = builder.header(name, value);
                }
                CredentialPlacement::Query(name) => {
                    uri.push(if uri.contains('?') { '&' } else { '?' });
                    uri.push_str(&percent_encode(name));
                    uri.push('=');
                    uri.push_str(&percent_encode(secret.expose()));
                }
                CredentialPlacement::None => {}
            }
        }
        let request = builder
            .uri(uri)
            .body(Full::new(Bytes::copy_from_slice(&request.body)))
            // The URI may hold a credential: never echo it.
            .map_err(|_| TransportError::InvalidRequest("the request URI or headers are invalid".into()))?;
        self.client.request(request).await.map_err(|e| {
            // A connect that timed out is a silent target, like any other timeout.
            if timed_out(&e) {
                return TransportError::Timeout;
            }
            let cause = self.redactor.text(&root_cause(&e)).into_owned();
            if e.is_connect() {
                TransportError::Connect(cause)
            } else {
                TransportError::Io(cause)
            }
        })
    }

    /// What every byte the provider sends back goes through.
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// Read a whole response body, bounded in size and time, with our
    /// credentials scrubbed from it.
    pub async fn read_body(
        &self,
        body: Incoming,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, TransportError> {
        let limited = Limited::new(body, self.max_response_bytes);
        match tokio::time::timeout_at(deadline, limited.collect()).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                Ok(match self.redactor.bytes(&bytes) {
                    std::borrow::Cow::Borrowed(_) => bytes,
                    std::borrow::Cow::Owned(clean) => Bytes::from(clean),
                })
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(TransportError::TooLarge(self.max_response_bytes))
            }
            Ok(Err(e)) => Err(TransportError::Io(
                self.redactor.text(&e.to_string()).into_owned(),
            )),
        }
    }

    /// Response headers as the adapter sees them (contract 0.3's
    /// `header-lines`), with our credentials scrubbed. A value that is not
    /// visible ASCII is left out, as `http` reads values.
    pub fn header_lines(&self, headers: &http::HeaderMap) -> String {
        let mut lines = String::with_capacity(headers.len() * 32);
        for (name, value) in headers {
            let Ok(value) = value.to_str() else { continue };
            lines.push_str(name.as_str());
            lines.push_str(": ");
            lines.push_str(&self.redactor.text(value));
            lines.push('\n');
        }
        lines
    }
}

/// Whether an I/O timeout is somewhere in the error's causes.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The innermost cause, without URLs (which may carry a query credential).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
