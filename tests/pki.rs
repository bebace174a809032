//! Throwaway certificate authorities for TLS tests, made by the openssl
//! command line: a CA, and server or client certificates it signs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA in a directory.
pub struct TestCa {
    dir: PathBuf,
    /// Its certificate (PEM): what a peer trusts.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A certificate and its key (PEM files).
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

impl TestCa {
    /// A new CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}-test-ca"),
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
        ]);
        TestCa {
            dir: dir.to_owned(),
            cert,
            key,
        }
    }

    /// A certificate for `name` signed by this CA: a server one valid for
    /// 127.0.0.1 and `localhost`, or a client one.
    pub fn issue(&self, name: &str, client: bool) -> Issued {
        let (cert, key) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        let (csr, ext) = (
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.ext")),
        );
        let usage = if client {
            "extendedKeyUsage=clientAuth\n"
        } else {
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        };
        std::fs::write(&ext, format!("basicConstraints=CA:FALSE\n{usage}")).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            path(&key),
            "-out",
            path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&self.cert),
            "-CAkey",
            path(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ]);
        Issued { cert, key }
    }
}

/// A rustls server configuration presenting `server`, requiring a client
/// certificate signed by `client_ca` when given.
pub fn server_config(
    server: &Issued,
    client_ca: Option<&Path>,
) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(certs, key).unwrap())
}

/// A TLS front for a server that cannot terminate TLS itself, the way a
/// TLS-terminating proxy sits in front of one in production: rustls
/// presenting `server` (and requiring a client certificate signed by
/// `client_ca` when given), each connection forwarded to the backend.
pub struct TlsFront {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    task: tokio::task::JoinHandle<()>,
}

/// Where a [`TlsFront`] forwards to.
#[derive(Clone)]
pub enum Backend {
    /// `host:port`.
    Tcp(String),
    /// A unix socket.
    Unix(PathBuf),
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Listen on a free port.
    pub async fn start(server: &Issued, client_ca: Option<&Path>, backend: Backend) -> TlsFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(server, client_ca));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = match backend {
                        Backend::Tcp(to) => match tokio::net::TcpStream::connect(&to).await {
                            Ok(mut plain) => {
                                tokio::io::copy_bidirectional(&mut tls, &mut plain).await
                            }
                            Err(e) => Err(e),
                        },
                        Backend::Unix(to) => match tokio::net::UnixStream::connect(&to).await {
                            Ok(mut plain) => {
                                tokio::io::copy_bidirectional(&mut tls, &mut plain).await
                            }
                            Err(e) => Err(e),
                        },
                    };
                });
            }
        });
        TlsFront { addr, task }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may
/// take it in between, which is rare enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
