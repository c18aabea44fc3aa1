//! TLS for `--tls`: the client side of HTTPS and WSS, and the stream type
//! every connection of the generator is, plain or TLS.

use std::cell::OnceCell;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use smol::Async;

/// One connection to the server. Plain runs pay one predictable branch
/// per read and write over the bare socket; the TLS state is boxed so a
/// plain connection does not carry its size.
pub(crate) enum Stream {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// Accepts any certificate and any handshake signature, without looking.
///
/// For benchmarking only: the servers load a self-signed certificate made
/// for the run, and what is measured is their side of the handshake. Not
/// checking the signature also keeps the generator's share of the crypto
/// small, so it can push the server harder. Never use this to reach a
/// server whose identity matters.
#[derive(Debug)]
struct TrustAnything {
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// What a TLS client needs: the connector, and the name it sends.
pub(crate) struct Client {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
    /// What the first handshake agreed on (version, cipher suite, key
    /// exchange), to tell that both servers were measured alike.
    pub(crate) negotiated: OnceCell<String>,
}

impl Client {
    /// A client for `host` (`host:port` as in the URL) that trusts any
    /// certificate and never resumes a session, so every connection is a
    /// full handshake.
    pub(crate) fn new(host: &str) -> Result<Client, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnything { schemes }))
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host_name(host).to_owned())
            .map_err(|e| format!("TLS: server name {host:?}: {e}"))?;
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
            name,
            negotiated: OnceCell::new(),
        })
    }

    pub(crate) async fn handshake(&self, tcp: Async<TcpStream>) -> std::io::Result<Stream> {
        let stream = self.connector.connect(self.name.clone(), tcp).await?;
        self.negotiated.get_or_init(|| {
            let session = stream.get_ref().1;
            let known = |what: Option<String>| what.unwrap_or_else(|| "?".into());
            format!(
                "{} {} {}",
                known(session.protocol_version().map(|v| format!("{v:?}"))),
                known(
                    session
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                ),
                known(
                    session
                        .negotiated_key_exchange_group()
                        .map(|g| format!("{:?}", g.name()))
                ),
            )
        });
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// The host of `host:port`, `[v6]:port` or `host`, without brackets.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}
