//! The Cloud Functions front end behind TLS, on a private CA of its own.
//! Google's front end terminates TLS and speaks HTTP/2 with clients that
//! offer it (Cloud Run's documentation: requests reach it as HTTP/2 and it
//! downgrades them to HTTP/1 for the container); the plain listener cannot
//! show that path, this one negotiates `h2` or `http/1.1` by ALPN.
//!
//! A client trusts it through the CA's PEM (for `grantbridge`,
//! `SSL_CERT_FILE`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::SandboxError;

/// The TLS front end, as [`crate::Sandbox::functions_tls`] started it.
#[derive(Debug, Clone)]
pub struct TlsFrontEnd {
    /// `https://127.0.0.1:P`: a function is at `{base_url}/NAME`.
    pub base_url: String,
    /// The CA that signed its certificate (for `127.0.0.1` and `localhost`).
    pub ca_pem: String,
}

impl TlsFrontEnd {
    /// `https://127.0.0.1:P/NAME`.
    pub fn function_url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }
}

fn tls_error(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Http(format!("TLS front end: {e}"))
}

/// A CA, and a server configuration with a certificate it signed,
/// offering `h2` then `http/1.1`.
fn server_config() -> Result<(rustls::ServerConfig, String), SandboxError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "grantbridge sandbox front end CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(tls_error)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().map_err(tls_error)?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(tls_error)?
        .signed_by(&leaf_key, &issuer)
        .map_err(tls_error)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(tls_error)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, ca_cert.pem()))
}

/// Serves `router` over TLS on 127.0.0.1 until `cancel`.
pub(crate) async fn serve(
    router: Router,
    cancel: CancellationToken,
) -> Result<(SocketAddr, String, JoinHandle<()>), SandboxError> {
    let (config, ca_pem) = server_config()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| SandboxError::Bind {
            service: "cloud functions (TLS)",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        service: "cloud functions (TLS)",
        source,
    })?;
    let task = tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    // Out of file descriptors, say: wait rather than spin (as axum::serve does).
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = cancel.cancelled() => return,
            };
            let (acceptor, router, cancel) = (acceptor.clone(), router.clone(), cancel.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // No stream limit of its own: Google documents none for its
                // front end, and the function's concurrency limit is the one
                // the sandbox enforces. (A real front end's limit would
                // queue calls in the client: hyper opens no second HTTP/2
                // connection to the same host.)
                builder.http2().max_concurrent_streams(None);
                let service = TowerToHyperService::new(router);
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    _ = connection => {}
                    () = cancel.cancelled() => {}
                }
            });
        }
    });
    Ok((addr, ca_pem, task))
}
