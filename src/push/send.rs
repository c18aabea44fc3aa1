//! One Web Push POST (RFC 8030 §5): the request written by hand, the
//! response's status line read with httparse, over TCP, or TLS for https.
//!
//! Why not an HTTP client crate: a push is one small POST whose answer
//! only matters by its status. ureq is blocking (a thread per push in
//! flight) and brings its own TLS roots (webpki-roots, about 250 KB);
//! hyper wants a runtime of its own below it; surf and isahc are no
//! longer kept. This is the server's own httparse and rustls, already in
//! the binary, on smol, with the system's CA certificates read once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use smol::net::TcpStream;

use super::{Endpoint, Policy};

/// The longest response head read (a status line and a few headers).
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Where the system keeps its CA certificates (Debian's
/// `ca-certificates`); `SSL_CERT_FILE` overrides it.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a POST did not get an answer.
#[derive(Debug)]
pub enum SendError {
    /// The endpoint is not allowed once resolved (see [`Policy`]).
    NotAllowed(String),
    /// No connection, a TLS failure, or the connection broke.
    Io(io::Error),
    /// The push service did not answer in time.
    Timeout,
    /// The answer was not HTTP.
    Garbled(&'static str),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotAllowed(why) => f.write_str(why),
            SendError::Io(error) => write!(f, "{error}"),
            SendError::Timeout => f.write_str("no answer in time"),
            SendError::Garbled(why) => write!(f, "not an HTTP answer: {why}"),
        }
    }
}

impl From<io::Error> for SendError {
    fn from(error: io::Error) -> SendError {
        SendError::Io(error)
    }
}

/// The request's head: `POST`, `Host`, the given headers, the body's length.
pub fn request_head(endpoint: &Endpoint, headers: &[(&str, String)], body_len: usize) -> String {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\n",
        endpoint.path,
        host_header(endpoint)
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    ));
    head
}

fn host_header(endpoint: &Endpoint) -> String {
    let origin = endpoint.origin();
    origin
        .split_once("://")
        .map_or(origin.clone(), |(_, host)| host.to_owned())
}

/// The status of a response whose first bytes are `bytes`: `Ok(None)`
/// while its head is incomplete.
pub fn response_status(bytes: &[u8]) -> Result<Option<u16>, SendError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => response
            .code
            .map(Some)
            .ok_or(SendError::Garbled("no status")),
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_RESPONSE_HEAD => {
            Err(SendError::Garbled("a head too long"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        // Many headers: the status line was read, which is all that counts.
        Err(httparse::Error::TooManyHeaders) => response
            .code
            .map(Some)
            .ok_or(SendError::Garbled("no status")),
        Err(_) => Err(SendError::Garbled("a malformed head")),
    }
}

/// Makes TLS connections to push services, trusting the system's CAs,
/// read at the first https push (a server that never pushes keeps no
/// certificate store in memory).
#[derive(Clone, Default)]
pub struct Connector {
    tls: std::rc::Rc<std::cell::OnceCell<Option<TlsConnector>>>,
}

impl Connector {
    /// A connector that reads the CAs when first needed.
    pub fn new() -> Connector {
        Connector::default()
    }

    /// The TLS client configuration; `None` when there is no TLS to make.
    fn tls(&self) -> Option<&TlsConnector> {
        self.tls.get_or_init(client_tls).as_ref()
    }

    /// Posts `body` with `headers` to `endpoint` (its resolved addresses
    /// checked against `policy`); the answer's status.
    pub async fn post(
        &self,
        endpoint: &Endpoint,
        policy: &Policy,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u16, SendError> {
        let exchange = self.exchange(endpoint, policy, headers, body);
        let late = async {
            smol::Timer::after(timeout).await;
            Err(SendError::Timeout)
        };
        futures_lite::future::or(exchange, late).await
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        policy: &Policy,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<u16, SendError> {
        policy
            .check(endpoint)
            .map_err(|error| SendError::NotAllowed(error.to_string()))?;
        let addresses: Vec<SocketAddr> =
            smol::net::resolve((endpoint.host.as_str(), endpoint.port)).await?;
        let address = addresses.first().copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to nothing")
        })?;
        for address in &addresses {
            policy
                .check_address(&endpoint.host, address.ip())
                .map_err(|error| SendError::NotAllowed(error.to_string()))?;
        }
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let mut request = request_head(endpoint, headers, body.len()).into_bytes();
        request.extend_from_slice(body);
        if endpoint.secure {
            let tls = self.tls().ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "no TLS client configuration")
            })?;
            let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "not a TLS server name")
            })?;
            let mut stream = tls.connect(name, tcp).await?;
            exchange_on(&mut stream, &request).await
        } else {
            let mut stream = tcp;
            exchange_on(&mut stream, &request).await
        }
    }
}

/// A TLS client configuration that trusts the system's CA certificates;
/// without any, https pushes fail (and say why) while http ones to listed
/// hosts still work.
fn client_tls() -> Option<TlsConnector> {
    let path = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| SYSTEM_ROOTS.to_owned());
    let mut roots = rustls::RootCertStore::empty();
    match std::fs::read(&path) {
        Ok(pem) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
        }
        Err(error) => log::warn!("push: cannot read CA certificates from {path}: {error}"),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|error| log::warn!("push: no TLS: {error}"))
        .ok()?;
    Some(TlsConnector::from(Arc::new(config)))
}

/// Writes `request` and reads until the response's status is known.
async fn exchange_on<S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> Result<u16, SendError> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(SendError::Garbled("closed before a whole head"));
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(status) = response_status(&head)? {
            return Ok(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_names_host_length_and_headers() {
        let endpoint = Endpoint::parse("http://[fd00::5]:2586/up1?x=1").unwrap();
        let head = request_head(&endpoint, &[("TTL", "30".to_owned())], 12);
        assert_eq!(
            head,
            "POST /up1?x=1 HTTP/1.1\r\nHost: [fd00::5]:2586\r\nTTL: 30\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
        );
        let secure = Endpoint::parse("https://push.example/p").unwrap();
        assert!(request_head(&secure, &[], 0).contains("\r\nHost: push.example\r\n"));
    }

    #[test]
    fn every_prefix_of_a_response_is_incomplete_until_its_head_ends() {
        let response = b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\n\r\n";
        for end in 0..response.len() {
            assert_eq!(response_status(&response[..end]).unwrap(), None, "{end}");
        }
        assert_eq!(response_status(response).unwrap(), Some(201));
        assert_eq!(
            response_status(b"HTTP/1.1 410 Gone\r\n\r\nbody").unwrap(),
            Some(410)
        );
        assert!(response_status(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(response_status(&vec![b'a'; MAX_RESPONSE_HEAD]).is_err());
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let crowded = format!("HTTP/1.1 201 Created\r\n{many}\r\n");
        assert_eq!(response_status(crowded.as_bytes()).unwrap(), Some(201));
    }

    #[test]
    fn a_post_reaches_a_local_receiver_and_reads_its_status() {
        crate::rt::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = smol::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                let mut chunk = [0u8; 256];
                while !got.ends_with(b"hello") {
                    let n = stream.read(&mut chunk).await.unwrap();
                    got.extend_from_slice(&chunk[..n]);
                }
                stream
                    .write_all(b"HTTP/1.1 410 Gone\r\n\r\n")
                    .await
                    .unwrap();
                String::from_utf8(got).unwrap()
            });
            let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/sub")).unwrap();
            let connector = Connector::new();
            let listed = Policy::new(["127.0.0.1".to_owned()]);
            let status = connector
                .post(&endpoint, &listed, &[], b"hello", Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(status, 410);
            assert!(server.await.starts_with("POST /sub HTTP/1.1\r\n"));
            // Not listed: refused before any connection.
            let refused = connector
                .post(
                    &endpoint,
                    &Policy::default(),
                    &[],
                    b"",
                    Duration::from_secs(5),
                )
                .await;
            assert!(
                matches!(refused, Err(SendError::NotAllowed(_))),
                "{refused:?}"
            );
        });
    }
}
