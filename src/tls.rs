//! TLS: HTTPS and WSS on the same port, with rustls (ring), and certificate
//! reloads that leave live connections alone.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate and key cannot be served.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no valid PEM.
    Certificate(PathBuf, rustls::pki_types::pem::Error),
    /// The certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// The key file cannot be read or holds no private key.
    Key(PathBuf, rustls::pki_types::pem::Error),
    /// rustls refused them: the key is not the certificate's, or of a kind
    /// it does not support.
    Refused(rustls::Error),
    /// The crypto provider offers none of the safe protocol versions (a
    /// build without TLS 1.2 and 1.3; not the files' fault).
    Provider(rustls::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Certificate(path, error) => {
                write!(f, "cannot read the certificate {}: {error}", path.display())
            }
            TlsError::NoCertificate(path) => write!(f, "no certificate in {}", path.display()),
            TlsError::Key(path, error) => {
                write!(f, "cannot read the private key {}: {error}", path.display())
            }
            TlsError::Refused(error) => write!(f, "certificate and key do not fit: {error}"),
            TlsError::Provider(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A certificate and key from PEM files, reloadable.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RefCell<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the certificate chain and private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        Ok(Tls {
            config: RefCell::new(server_config(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Reads the files again; new connections use them, live ones keep
    /// theirs. On error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.config.borrow_mut() = server_config(&self.cert, &self.key)?;
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.borrow().clone())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|error| TlsError::Certificate(cert.to_owned(), error))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key(key.to_owned(), error))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Provider)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client connection, plain or TLS.
pub enum Stream<S> {
    /// Plain TCP.
    Plain(S),
    /// TLS over TCP; boxed, so plain connections don't carry its size.
    Tls(Box<TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}
