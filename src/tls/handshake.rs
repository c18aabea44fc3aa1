//! The TLS handshake, run by rustls's unbuffered server connection with no
//! I/O of its own: the driver feeds in what the client sent and sends what
//! [`Handshake::step`] asks for, until it yields the connection's
//! [`Records`].
//!
//! Its buffers live only as long as the handshake; a rustls connection
//! would keep them, with the handshake's state, for the life of the
//! connection.

use std::io;
use std::sync::Arc;

use std::cell::Cell;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{KeyLog, ServerConfig};

use super::records::{Records, Secret, TrafficSecrets};

/// What the driver does next.
pub enum Step {
    /// Send [`Handshake::outgoing`] to the client, then tell [`Handshake::sent`].
    Send,
    /// Read from the client and pass it to [`Handshake::received`].
    Receive,
    /// The handshake is done: [`Handshake::finish`] gives the connection.
    Done,
}

/// A TLS handshake in progress.
pub struct Handshake {
    conn: UnbufferedServerConnection,
    /// What the client sent that rustls has not consumed yet.
    incoming: Vec<u8>,
    /// What rustls encoded for the client and the driver has not sent.
    outgoing: Vec<u8>,
    /// Application data that arrived with the client's last flight.
    plaintext: Vec<u8>,
    /// The TLS 1.3 traffic secrets, once rustls derived them.
    secrets: Captured,
}

/// The traffic secrets rustls hands its key log during one
/// `process_tls_records` call on this thread.
#[derive(Clone, Copy, Default)]
struct Captured {
    client: Option<Secret>,
    server: Option<Secret>,
}

thread_local! {
    static CAPTURED: Cell<Captured> = Cell::new(Captured::default());
}

/// The key log of every server connection: it keeps the two TLS 1.3
/// application traffic secrets for the handshake rustls is running on this
/// thread, so a key update can derive the next keys without rustls's
/// key-update state (`KernelConnection`, about 850 bytes a connection).
/// Nothing is written anywhere.
#[derive(Debug)]
pub struct TrafficSecretLog;

impl KeyLog for TrafficSecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let mut captured = CAPTURED.get();
        match label {
            "CLIENT_TRAFFIC_SECRET_0" => captured.client = Some(Secret::new(secret)),
            "SERVER_TRAFFIC_SECRET_0" => captured.server = Some(Secret::new(secret)),
            _ => return,
        }
        CAPTURED.set(captured);
    }

    fn will_log(&self, label: &str) -> bool {
        matches!(label, "CLIENT_TRAFFIC_SECRET_0" | "SERVER_TRAFFIC_SECRET_0")
    }
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl Handshake {
    /// A handshake with `config`'s certificate.
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Handshake> {
        Ok(Handshake {
            conn: UnbufferedServerConnection::new(config).map_err(tls_error)?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            secrets: Captured::default(),
        })
    }

    /// Bytes from the client.
    pub fn received(&mut self, bytes: &[u8]) {
        self.incoming.extend_from_slice(bytes);
    }

    /// What to send to the client.
    pub fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// The driver sent all of [`Handshake::outgoing`].
    pub fn sent(&mut self) {
        self.outgoing.clear();
    }

    /// Runs the handshake as far as what was received allows.
    ///
    /// On an error the handshake is over; a fatal alert may wait in
    /// [`Handshake::outgoing`] for the driver to try to send.
    pub fn step(&mut self) -> io::Result<Step> {
        loop {
            CAPTURED.set(self.secrets);
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            self.secrets = CAPTURED.replace(Captured::default());
            let next = match state {
                Err(error) => {
                    self.incoming.drain(..discard);
                    self.encode_alert();
                    return Err(tls_error(error));
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut self.outgoing, |out| data.encode(out)).map_err(tls_error)?;
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    Some(Step::Send)
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Step::Receive),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(ConnectionState::WriteTraffic(_)) => Some(Step::Done),
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection during the TLS handshake",
                    ));
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS handshake state",
                    ));
                }
            };
            self.incoming.drain(..discard);
            if let Some(step) = next {
                return Ok(step);
            }
        }
    }

    /// After a failure, the alert rustls queued, if any.
    fn encode_alert(&mut self) {
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state {
            let _ = encode(&mut self.outgoing, |out| data.encode(out));
        }
    }

    /// The connection, once [`Handshake::step`] said [`Step::Done`]: the
    /// traffic keys go to the record layer, the rest is dropped.
    pub fn finish(self) -> io::Result<Records> {
        let Handshake {
            conn,
            incoming,
            plaintext,
            secrets,
            ..
        } = self;
        let agreed = match (conn.protocol_version(), conn.negotiated_cipher_suite()) {
            (Some(version), Some(suite)) => (version, suite),
            _ => return Err(tls_error(rustls::Error::HandshakeNotComplete)),
        };
        let traffic = match secrets {
            Captured {
                client: Some(client),
                server: Some(server),
            } => Some(TrafficSecrets { client, server }),
            _ => None,
        };
        // The key-update state rustls offers with the keys is not kept:
        // `traffic` does its work in 100 bytes.
        let (keys, _) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
        Records::new(agreed, keys, traffic, incoming, plaintext)
    }
}

/// Encodes a handshake record into the end of `out`, growing it to the
/// size rustls asks for.
fn encode(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut want = 1024;
    loop {
        out.resize(start + want, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(size)) => want = size.required_size,
            Err(error) => {
                out.truncate(start);
                return Err(rustls::Error::General(error.to_string()));
            }
        }
    }
}
