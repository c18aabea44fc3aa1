//! TLS: HTTPS and WSS on the same port, with rustls (ring), and certificate
//! reloads that leave live connections alone.
//!
//! rustls runs the handshake (`handshake`); after it a connection keeps
//! only its traffic keys and what is in flight (`records`), and reads and
//! writes through one buffer per thread, so an idle TLS client costs about
//! what a plain one does.

mod handshake;
mod records;

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use handshake::{Handshake, Step};
use records::Records;

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

    /// Runs the TLS handshake on `io` with the current certificate.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: S,
    ) -> io::Result<TlsStream<S>> {
        let config = self.config.borrow().clone();
        let mut handshake = Handshake::new(config)?;
        let mut buf = [0; 4096];
        loop {
            let step = match handshake.step() {
                Ok(step) => step,
                Err(error) => {
                    // The alert rustls has for the client, if the socket
                    // takes it.
                    let _ = io.write_all(handshake.outgoing()).await;
                    return Err(error);
                }
            };
            match step {
                Step::Send => {
                    io.write_all(handshake.outgoing()).await?;
                    handshake.sent();
                }
                Step::Receive => {
                    let n = io.read(&mut buf).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    handshake.received(&buf[..n]);
                }
                Step::Done => {
                    return Ok(TlsStream {
                        io,
                        records: handshake.finish()?,
                    });
                }
            }
        }
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
    // The record layer after the handshake is this module's.
    config.enable_secret_extraction = true;
    config.key_log = Arc::new(handshake::TrafficSecretLog);
    Ok(Arc::new(config))
}

/// What one read from the socket may bring: a record.
const READ_BUFFER: usize = records::MAX_RECORD;
/// Socket reads one `poll_read` makes before it yields to other tasks.
const READS_PER_POLL: usize = 4;
/// What one write may seal: a few records, so a large message is one
/// system call.
const WRITE_BUFFER: usize = 4 * records::MAX_RECORD;

thread_local! {
    // One of each per thread, shared by every connection on it: a
    // connection keeps only what is in flight.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_read_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    READ_SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < READ_BUFFER {
            scratch.resize(READ_BUFFER, 0);
        }
        f(scratch)
    })
}

fn with_write_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    WRITE_SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        if scratch.capacity() < WRITE_BUFFER {
            scratch.reserve_exact(WRITE_BUFFER);
        }
        f(scratch)
    })
}

/// A TLS connection after its handshake: the socket and its records.
pub struct TlsStream<S> {
    io: S,
    records: Records,
}

impl<S: AsyncWrite + Unpin> TlsStream<S> {
    /// Sends what waits in the record layer.
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.records.unsent().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.records.unsent()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.records.sent(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Records that carry no data (a key update, a warning, an empty
        // record) are read on, but not past a few socket reads in one
        // poll, so a client sending only those cannot hold the thread.
        for _ in 0..READS_PER_POLL {
            // A key update or alert this side owes the client goes first,
            // if the socket takes it now; else with the next write.
            if let Poll::Ready(Err(error)) = this.poll_unsent(cx) {
                return Poll::Ready(Err(error));
            }
            let n = this.records.take_plaintext(buf);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if this.records.peer_closed() {
                return Poll::Ready(Ok(0));
            }
            let received = with_read_scratch(|scratch| {
                let n = ready!(Pin::new(&mut this.io).poll_read(cx, scratch))?;
                if n == 0 {
                    // A client may close without close_notify between
                    // messages (browsers do); not in the middle of a record.
                    return Poll::Ready(if this.records.mid_record() {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    } else {
                        Ok(None)
                    });
                }
                Poll::Ready(this.records.receive(&mut scratch[..n], buf).map(Some))
            });
            match ready!(received) {
                Ok(Some(0)) => continue,
                Ok(Some(n)) => return Poll::Ready(Ok(n)),
                Ok(None) => return Poll::Ready(Ok(0)),
                Err(error) => {
                    let _ = this.poll_unsent(cx);
                    return Poll::Ready(Err(error));
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        with_write_scratch(|scratch| {
            let taken = match this.records.seal(buf, scratch) {
                Ok(taken) => taken,
                Err(error) => {
                    let _ = this.poll_unsent(cx);
                    return Poll::Ready(Err(error));
                }
            };
            // What the socket does not take now waits for the next write
            // or flush: the caller's bytes are taken either way.
            let mut written = 0;
            while written < scratch.len() {
                match Pin::new(&mut this.io).poll_write(cx, &scratch[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => break,
                }
            }
            this.records.keep_unsent(&scratch[written..]);
            Poll::Ready(Ok(taken))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.records.close();
        ready!(this.poll_unsent(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
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
