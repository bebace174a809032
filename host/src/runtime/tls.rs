//! TLS clients for capabilities that reach private endpoints: a CA bundle
//! that replaces the system roots, and plugins' outgoing HTTP sent through
//! such a client when its grant names one.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{Error, WasiBody};

/// `builder` trusting only the certificates in the PEM bundle at `path`.
pub(super) fn trust_only(
    builder: reqwest::ClientBuilder,
    path: &Path,
) -> Result<reqwest::ClientBuilder, String> {
    let pem = std::fs::read(path).map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("CA bundle {} holds no certificate", path.display()));
    }
    let mut b = builder.use_rustls_tls().tls_built_in_root_certs(false);
    for cert in certs {
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

/// A client for an `http` grant with a CA bundle: only those CAs, no
/// redirects (the grant allows the first destination only), connect and
/// read timeouts of `limit`.
pub(super) fn client_trusting(ca: &Path, limit: Duration) -> Result<reqwest::Client, String> {
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limit)
        .read_timeout(limit);
    trust_only(b, ca)?.build().map_err(|e| e.to_string())
}

/// The error a failed request is to the guest.
fn error(e: &reqwest::Error) -> Error {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        Error::ConnectionTimeout
    } else if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        tracing::warn!(error = %chain, "https peer's certificate refused");
        Error::TlsCertificateError
    } else if e.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::Connect(std::io::Error::other(chain))
    }
}

/// Send `request` through `client`; the response body is read whole, up
/// to `max` bytes (more fails the request).
pub(super) async fn send(
    client: &reqwest::Client,
    request: http::Request<WasiBody>,
    max: u64,
) -> Result<http::Response<WasiBody>, Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| error(&e))?;
    let mut head = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        head = head.header(name, value);
    }
    let mut read = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error(&e))? {
        if (read.len() + chunk.len()) as u64 > max {
            return Err(Error::HttpResponseBodySize(Some(
                (read.len() + chunk.len()) as u64,
            )));
        }
        read.extend_from_slice(&chunk);
    }
    let body = http_body_util::Full::new(Bytes::from(read))
        .map_err(|never| match never {})
        .boxed_unsync();
    head.body(body).map_err(|_| Error::HttpResponseIncomplete)
}
