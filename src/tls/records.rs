//! The TLS record layer after the handshake: what an established
//! connection keeps, and nothing more.
//!
//! rustls runs the handshake (`handshake.rs`), then hands over the traffic
//! keys, as it does for kernel TLS. From there a connection is [`Records`]:
//! for each direction the AEAD key, IV, sequence number and, in TLS 1.3,
//! the traffic secret a key update derives the next key from (about 100
//! bytes; rustls's own key-update state would be 850 more, measured), and
//! three byte queues that are empty, and hold no memory,
//! whenever the connection is idle: a record received in part, plaintext
//! the reader has not taken yet, and ciphertext the socket has not taken
//! yet. A rustls connection keeps a 4 KiB receive buffer, its expanded keys
//! and its handshake machinery for the life of the connection (about 7.7 KB
//! per idle WebSocket client, measured); for an intercom whose clients idle
//! for hours between calls, that was most of what each client cost.
//!
//! The expanded cipher keys (AES round keys and GHASH tables, about 500
//! bytes a direction) are built for each batch of records and dropped after
//! it. That costs one key setup per direction per read or write, around
//! 0.1 µs with AES-NI, against keeping 1 KB per idle connection.
//!
//! Nothing here does I/O: the driver in `tls.rs` passes in what the socket
//! gave and takes out what it should send, so every case is tested byte by
//! byte against a rustls client (`records_tests`).

use std::io;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

/// The largest plaintext a record carries (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// A record header: type, legacy version, length.
pub const HEADER: usize = 5;
/// The AEAD tag of every suite offered.
const TAG: usize = 16;
/// TLS 1.2 AES-GCM sends the nonce's last 8 bytes before each record.
const EXPLICIT_NONCE: usize = 8;
/// The longest record body accepted: TLS 1.3 allows 256 bytes of expansion
/// (RFC 8446 §5.2), TLS 1.2 2048 (RFC 5246 §6.2.3).
const MAX_BODY_13: usize = MAX_PLAINTEXT + 256;
const MAX_BODY_12: usize = MAX_PLAINTEXT + 2048;
/// The largest record this side sends.
pub const MAX_RECORD: usize = HEADER + MAX_PLAINTEXT + 1 + EXPLICIT_NONCE + TAG;

/// Warning alerts and renegotiation requests a connection may send.
const MAX_WARNINGS: u8 = 4;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

const KEY_UPDATE: u8 = 24;
const CLIENT_HELLO: u8 = 1;

const WARNING: u8 = 1;
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const ILLEGAL_PARAMETER: u8 = 47;
const INTERNAL_ERROR: u8 = 80;
const USER_CANCELED: u8 = 90;
const NO_RENEGOTIATION: u8 = 100;

/// Which record protection the connection agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// The hash of the TLS 1.3 suite with this cipher.
    fn hash(self) -> hkdf::Algorithm {
        match self {
            Cipher::Aes256Gcm => hkdf::HKDF_SHA384,
            Cipher::Aes128Gcm | Cipher::Chacha20Poly1305 => hkdf::HKDF_SHA256,
        }
    }
}

/// A TLS 1.3 traffic secret (RFC 8446 §7.1), as long as the suite's hash.
#[derive(Clone, Copy)]
pub struct Secret {
    bytes: [u8; 48],
    len: u8,
}

impl Secret {
    /// The secret in `bytes`; at most 48 bytes (SHA-384) are kept.
    pub fn new(bytes: &[u8]) -> Secret {
        let mut secret = Secret {
            bytes: [0; 48],
            len: bytes.len().min(48) as u8,
        };
        secret.bytes[..usize::from(secret.len)].copy_from_slice(&bytes[..usize::from(secret.len)]);
        secret
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The two TLS 1.3 application traffic secrets, from which a key update
/// derives the next keys.
#[derive(Clone, Copy)]
pub struct TrafficSecrets {
    pub client: Secret,
    pub server: Secret,
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(hash: hkdf::Algorithm, secret: &[u8], label: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Prk::new_less_safe(hash, secret);
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    // Lengths here are at most 48 bytes, far below HKDF's limit.
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .unwrap_or_else(|_| unreachable!("HKDF output within its limit"));
}

/// One direction's traffic keys.
struct Keys {
    cipher: Cipher,
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    /// The traffic secret the key came from (TLS 1.3; none in TLS 1.2).
    secret: Option<Secret>,
}

impl Keys {
    fn new(
        (seq, secrets): (u64, ConnectionTrafficSecrets),
        secret: Option<Secret>,
    ) -> io::Result<Keys> {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::Chacha20Poly1305, key, iv)
            }
            _ => return Err(invalid("the agreed cipher suite is not supported")),
        };
        let mut keys = Keys {
            cipher,
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
            secret,
        };
        let key = key.as_ref();
        let iv = iv.as_ref();
        if key.len() != cipher.algorithm().key_len() || iv.len() != aead::NONCE_LEN {
            return Err(invalid("the traffic keys have the wrong length"));
        }
        keys.key[..key.len()].copy_from_slice(key);
        keys.iv.copy_from_slice(iv);
        Ok(keys)
    }

    /// The keys after a TLS 1.3 key update (RFC 8446 §7.2), from number 0.
    fn next(&self) -> Result<Keys, Alert> {
        let secret = self
            .secret
            .ok_or(Alert::fatal(UNEXPECTED_MESSAGE, "no key update in TLS 1.2"))?;
        let hash = self.cipher.hash();
        let mut next = Secret {
            bytes: [0; 48],
            len: secret.len,
        };
        expand_label(
            hash,
            secret.as_bytes(),
            b"traffic upd",
            &mut next.bytes[..usize::from(next.len)],
        );
        let mut keys = Keys {
            cipher: self.cipher,
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq: 0,
            secret: Some(next),
        };
        let key_len = self.cipher.algorithm().key_len();
        expand_label(hash, next.as_bytes(), b"key", &mut keys.key[..key_len]);
        expand_label(hash, next.as_bytes(), b"iv", &mut keys.iv);
        Ok(keys)
    }

    /// The expanded key, for one batch of records.
    fn expand(&self) -> LessSafeKey {
        let key = &self.key[..self.cipher.algorithm().key_len()];
        // The length was checked in `new`.
        let unbound = UnboundKey::new(self.cipher.algorithm(), key)
            .unwrap_or_else(|_| unreachable!("key length checked"));
        LessSafeKey::new(unbound)
    }

    /// The IV with the sequence number mixed in (RFC 8446 §5.3; the same for
    /// TLS 1.2 ChaCha20 and, as rustls builds it, for TLS 1.2 AES-GCM).
    fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        nonce
    }

    /// Moves to the next record's number; a connection that used up 2^64
    /// records ends rather than reuse a nonce.
    fn advance(&mut self) -> Result<(), Alert> {
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(Alert::fatal(INTERNAL_ERROR, "sequence numbers used up"))?;
        Ok(())
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.key.fill(0);
        if let Some(secret) = &mut self.secret {
            secret.bytes.fill(0);
        }
        std::hint::black_box(self);
    }
}

/// TLS 1.2's additional data: sequence number, type, version, length.
fn aad12(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&[3, 3]);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// Why a connection ends, and the alert that tells the client.
#[derive(Debug)]
struct Alert {
    /// None when the client ended it with an alert of its own.
    description: Option<u8>,
    why: &'static str,
}

impl Alert {
    fn fatal(description: u8, why: &'static str) -> Alert {
        Alert {
            description: Some(description),
            why,
        }
    }

    fn quiet(why: &'static str) -> Alert {
        Alert {
            description: None,
            why,
        }
    }
}

fn invalid(why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// An established TLS connection's record layer.
pub struct Records {
    version: Version,
    rx: Keys,
    tx: Keys,
    /// Records sent with one key before this side moves to the next key
    /// (TLS 1.3) or ends the connection (TLS 1.2): the suite's
    /// confidentiality limit.
    limit: u64,
    /// The start of a record whose end has not arrived.
    incoming: Vec<u8>,
    /// Plaintext received and not yet taken, from `taken` on.
    plaintext: Vec<u8>,
    taken: usize,
    /// Records to send that the socket has not taken, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// The client sent close_notify: nothing more comes.
    peer_closed: bool,
    /// This side sent close_notify or a fatal alert: nothing more goes.
    closed: bool,
    /// A fatal error: nothing more is read either.
    failed: bool,
    /// Warning alerts and renegotiation requests so far: records that
    /// carry nothing and cost a decryption each, so a few are allowed, as
    /// rustls allows.
    warnings: u8,
}

impl Records {
    /// Takes over from rustls once the handshake is done, with the start of
    /// a record that came after the client's Finished and any application
    /// data rustls decrypted already. TLS 1.3 needs the traffic secrets
    /// too, for key updates.
    pub fn new(
        agreed: (ProtocolVersion, SupportedCipherSuite),
        secrets: ExtractedSecrets,
        traffic: Option<TrafficSecrets>,
        incoming: Vec<u8>,
        plaintext: Vec<u8>,
    ) -> io::Result<Records> {
        let (version, limit, traffic) = match (agreed, traffic) {
            ((ProtocolVersion::TLSv1_3, SupportedCipherSuite::Tls13(suite)), Some(traffic)) => (
                Version::Tls13,
                suite.common.confidentiality_limit,
                Some(traffic),
            ),
            ((ProtocolVersion::TLSv1_2, SupportedCipherSuite::Tls12(suite)), _) => {
                (Version::Tls12, suite.common.confidentiality_limit, None)
            }
            _ => return Err(invalid("the agreed protocol version is not supported")),
        };
        let mut records = Records {
            version,
            rx: Keys::new(secrets.rx, traffic.map(|t| t.client))?,
            tx: Keys::new(secrets.tx, traffic.map(|t| t.server))?,
            limit,
            incoming: Vec::new(),
            plaintext,
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            closed: false,
            failed: false,
            warnings: 0,
        };
        if !incoming.is_empty() {
            let mut incoming = incoming;
            let mut none = [];
            records.receive(&mut incoming, &mut none)?;
        }
        Ok(records)
    }

    /// Whether the client closed its side with close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether part of a record is waiting for its end.
    pub fn mid_record(&self) -> bool {
        !self.incoming.is_empty()
    }

    /// Moves plaintext received earlier into `out`.
    pub fn take_plaintext(&mut self, out: &mut [u8]) -> usize {
        let rest = &self.plaintext[self.taken..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
        n
    }

    /// Handles `bytes` from the socket: whole records are decrypted, their
    /// plaintext goes to `out` as far as it fits (the count is returned) and
    /// is kept beyond that, a record's start is kept for its end. `bytes`
    /// is used as scratch space.
    ///
    /// On an error the connection is over: a fatal alert waits in
    /// [`Records::unsent`] for the driver to try to send.
    pub fn receive(&mut self, bytes: &mut [u8], out: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            self.receive_records(bytes, out)
        } else {
            let mut joined = std::mem::take(&mut self.incoming);
            joined.extend_from_slice(bytes);
            self.receive_records(&mut joined, out)
        }
    }

    fn receive_records(&mut self, bytes: &mut [u8], out: &mut [u8]) -> io::Result<usize> {
        let mut delivered = 0;
        let mut at = 0;
        let mut key: Option<LessSafeKey> = None;
        let result = loop {
            if self.peer_closed || self.failed {
                // Whatever follows close_notify is not read (RFC 8446 §6.1).
                break Ok(());
            }
            let rest = &mut bytes[at..];
            let Some(len) = (match body_len(self.version, rest) {
                Ok(len) => len,
                Err(alert) => break Err(alert),
            }) else {
                self.incoming = rest.to_vec();
                break Ok(());
            };
            let (header, body) = rest[..HEADER + len].split_at_mut(HEADER);
            let header: [u8; HEADER] = [header[0], header[1], header[2], header[3], header[4]];
            let expanded = key.get_or_insert_with(|| self.rx.expand());
            let opened = match self.version {
                Version::Tls13 => open13(&mut self.rx, expanded, header, body),
                Version::Tls12 => open12(&mut self.rx, expanded, header, body),
            };
            let (typ, content) = match opened {
                Ok(opened) => opened,
                Err(alert) => break Err(alert),
            };
            at += HEADER + len;
            match self.content(typ, content, out, &mut delivered) {
                Ok(Keep::Key) => {}
                Ok(Keep::NewKey) => key = None,
                Err(alert) => break Err(alert),
            }
        };
        match result {
            Ok(()) => Ok(delivered),
            Err(alert) => Err(self.fail(alert)),
        }
    }

    /// Acts on one record's content.
    fn content(
        &mut self,
        typ: u8,
        content: &[u8],
        out: &mut [u8],
        delivered: &mut usize,
    ) -> Result<Keep, Alert> {
        match typ {
            APPLICATION_DATA => {
                if self.plaintext.is_empty() {
                    let n = content.len().min(out.len() - *delivered);
                    out[*delivered..*delivered + n].copy_from_slice(&content[..n]);
                    *delivered += n;
                    self.plaintext.extend_from_slice(&content[n..]);
                } else {
                    self.plaintext.extend_from_slice(content);
                }
                Ok(Keep::Key)
            }
            ALERT => {
                let [level, description] = content else {
                    return Err(Alert::fatal(DECODE_ERROR, "malformed alert"));
                };
                match (self.version, *level, *description) {
                    (_, _, CLOSE_NOTIFY) => self.peer_closed = true,
                    (Version::Tls13, _, USER_CANCELED) | (Version::Tls12, WARNING, _) => {
                        self.warnings += 1;
                        if self.warnings > MAX_WARNINGS {
                            return Err(Alert::fatal(DECODE_ERROR, "too many warning alerts"));
                        }
                    }
                    _ => return Err(Alert::quiet("the client sent a fatal alert")),
                }
                Ok(Keep::Key)
            }
            HANDSHAKE => match self.version {
                Version::Tls13 => self.handshake13(content),
                Version::Tls12 => {
                    // A ClientHello asks to renegotiate, which rustls never
                    // does either: say no and carry on (RFC 5746 §4.4).
                    if content.first() != Some(&CLIENT_HELLO) {
                        return Err(Alert::fatal(UNEXPECTED_MESSAGE, "unexpected handshake"));
                    }
                    self.warnings += 1;
                    if self.warnings > MAX_WARNINGS {
                        return Err(Alert::fatal(
                            UNEXPECTED_MESSAGE,
                            "too many renegotiation requests",
                        ));
                    }
                    self.seal_into_outgoing(ALERT, &[WARNING, NO_RENEGOTIATION])?;
                    Ok(Keep::Key)
                }
            },
            _ => Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "unexpected record type after the handshake",
            )),
        }
    }

    /// TLS 1.3 post-handshake messages from a client: only KeyUpdate
    /// (RFC 8446 §4.6.3). It must end its record; a handshake message split
    /// over records is refused (no client splits a 5-byte message).
    fn handshake13(&mut self, content: &[u8]) -> Result<Keep, Alert> {
        let &[KEY_UPDATE, 0, 0, 1, request] = content else {
            return Err(Alert::fatal(
                UNEXPECTED_MESSAGE,
                "unexpected handshake message after the handshake",
            ));
        };
        if request > 1 {
            return Err(Alert::fatal(ILLEGAL_PARAMETER, "malformed key update"));
        }
        self.rx = self.rx.next()?;
        if request == 1 {
            self.update_tx()?;
        }
        Ok(Keep::NewKey)
    }

    /// Tells the client this side moves to its next key, and moves.
    fn update_tx(&mut self) -> Result<(), Alert> {
        self.seal_into_outgoing(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0])?;
        self.tx = self.tx.next()?;
        Ok(())
    }

    /// Ends the connection over `alert`: queues it for the client (if the
    /// keys still allow) and returns the error for the driver.
    fn fail(&mut self, alert: Alert) -> io::Error {
        if let (false, Some(description)) = (self.closed, alert.description) {
            let _ = self.seal_into_outgoing(ALERT, &[FATAL, description]);
        }
        self.closed = true;
        self.failed = true;
        self.incoming = Vec::new();
        self.plaintext = Vec::new();
        self.taken = 0;
        invalid(alert.why)
    }

    /// Encrypts as much of `data` as fits in `out`'s spare capacity (at
    /// least one record), appending the records; returns how much it took.
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection is closed",
            ));
        }
        let mut taken = 0;
        let mut key: Option<LessSafeKey> = None;
        while taken < data.len() {
            let chunk = &data[taken..data.len().min(taken + MAX_PLAINTEXT)];
            if taken > 0 && out.capacity() - out.len() < chunk.len() + MAX_RECORD - MAX_PLAINTEXT {
                break;
            }
            if self.tx.seq >= self.limit {
                // Past the suite's confidentiality limit: a new key (TLS 1.3)
                // or the end (TLS 1.2), as rustls does.
                match self.version {
                    Version::Tls13 => {
                        self.update_tx().map_err(|alert| self.fail(alert))?;
                        key = None;
                    }
                    Version::Tls12 => {
                        self.close();
                        return Err(
                            self.fail(Alert::quiet("the cipher's record limit was reached"))
                        );
                    }
                }
            }
            let expanded = key.get_or_insert_with(|| self.tx.expand());
            seal(
                self.version,
                &mut self.tx,
                expanded,
                APPLICATION_DATA,
                chunk,
                out,
            )
            .map_err(|alert| self.fail(alert))?;
            taken += chunk.len();
        }
        Ok(taken)
    }

    /// Queues close_notify: this side sends nothing more.
    pub fn close(&mut self) {
        if !self.closed {
            let _ = self.seal_into_outgoing(ALERT, &[WARNING, CLOSE_NOTIFY]);
            self.closed = true;
        }
    }

    fn seal_into_outgoing(&mut self, typ: u8, content: &[u8]) -> Result<(), Alert> {
        let key = self.tx.expand();
        let mut outgoing = std::mem::take(&mut self.outgoing);
        let result = seal(
            self.version,
            &mut self.tx,
            &key,
            typ,
            content,
            &mut outgoing,
        );
        self.outgoing = outgoing;
        result
    }

    /// What waits to be sent: alerts and key updates this layer made, and
    /// records the socket did not take at once.
    pub fn unsent(&self) -> &[u8] {
        &self.outgoing[self.sent..]
    }

    /// The socket took `n` bytes of [`Records::unsent`].
    pub fn sent(&mut self, n: usize) {
        self.sent += n;
        if self.sent >= self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }

    /// Keeps what the socket did not take of records sealed elsewhere.
    pub fn keep_unsent(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.outgoing.extend_from_slice(rest);
        }
    }
}

/// Whether the batch's expanded receive key still holds.
enum Keep {
    Key,
    NewKey,
}

/// The body length of the record that starts `bytes`, once all of it is
/// there.
fn body_len(version: Version, bytes: &[u8]) -> Result<Option<usize>, Alert> {
    let Some(header) = bytes.get(..HEADER) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let max = match version {
        Version::Tls13 => MAX_BODY_13,
        Version::Tls12 => MAX_BODY_12,
    };
    if len > max {
        return Err(Alert::fatal(RECORD_OVERFLOW, "record too long"));
    }
    Ok((bytes.len() >= HEADER + len).then_some(len))
}

/// Decrypts a TLS 1.3 record in place: its real type and content.
fn open13<'a>(
    keys: &mut Keys,
    key: &LessSafeKey,
    header: [u8; HEADER],
    body: &'a mut [u8],
) -> Result<(u8, &'a [u8]), Alert> {
    if header[0] != APPLICATION_DATA {
        // After the handshake every TLS 1.3 record is application data
        // outside (change_cipher_spec only during it, RFC 8446 §5).
        return Err(Alert::fatal(
            UNEXPECTED_MESSAGE,
            "unencrypted record after the handshake",
        ));
    }
    let nonce = Nonce::assume_unique_for_key(keys.nonce());
    let plain = key
        .open_in_place(nonce, Aad::from(header), body)
        .map_err(|_| Alert::fatal(BAD_RECORD_MAC, "a record failed to decrypt"))?;
    keys.advance()?;
    // The content type is the last byte that is not padding.
    let end = plain
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(Alert::fatal(UNEXPECTED_MESSAGE, "a record with no type"))?;
    if end > MAX_PLAINTEXT {
        return Err(Alert::fatal(RECORD_OVERFLOW, "record too long"));
    }
    Ok((plain[end], &plain[..end]))
}

/// Decrypts a TLS 1.2 record in place: its type and content.
fn open12<'a>(
    keys: &mut Keys,
    key: &LessSafeKey,
    header: [u8; HEADER],
    body: &'a mut [u8],
) -> Result<(u8, &'a [u8]), Alert> {
    let typ = header[0];
    if typ == CHANGE_CIPHER_SPEC || !(ALERT..=APPLICATION_DATA).contains(&typ) {
        return Err(Alert::fatal(
            UNEXPECTED_MESSAGE,
            "unexpected record type after the handshake",
        ));
    }
    let failed = || Alert::fatal(BAD_RECORD_MAC, "a record failed to decrypt");
    let plain = match keys.cipher {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm => {
            let len = body
                .len()
                .checked_sub(EXPLICIT_NONCE + TAG)
                .ok_or_else(failed)?;
            let mut nonce = [0; aead::NONCE_LEN];
            nonce[..4].copy_from_slice(&keys.iv[..4]);
            nonce[4..].copy_from_slice(&body[..EXPLICIT_NONCE]);
            let aad = Aad::from(aad12(keys.seq, typ, len));
            let nonce = Nonce::assume_unique_for_key(nonce);
            key.open_within(nonce, aad, body, EXPLICIT_NONCE..)
                .map_err(|_| failed())?
        }
        Cipher::Chacha20Poly1305 => {
            let len = body.len().checked_sub(TAG).ok_or_else(failed)?;
            let aad = Aad::from(aad12(keys.seq, typ, len));
            let nonce = Nonce::assume_unique_for_key(keys.nonce());
            key.open_in_place(nonce, aad, body).map_err(|_| failed())?
        }
    };
    keys.advance()?;
    if plain.len() > MAX_PLAINTEXT {
        return Err(Alert::fatal(RECORD_OVERFLOW, "record too long"));
    }
    Ok((typ, plain))
}

/// Appends one record of `typ` carrying `content` (at most
/// [`MAX_PLAINTEXT`]) to `out`.
fn seal(
    version: Version,
    keys: &mut Keys,
    key: &LessSafeKey,
    typ: u8,
    content: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Alert> {
    let start = out.len();
    let nonce = keys.nonce();
    let failed = || Alert::fatal(INTERNAL_ERROR, "a record failed to encrypt");
    match version {
        Version::Tls13 => {
            let len = (content.len() + 1 + TAG) as u16;
            let [hi, lo] = len.to_be_bytes();
            let header = [APPLICATION_DATA, 3, 3, hi, lo];
            out.extend_from_slice(&header);
            out.extend_from_slice(content);
            out.push(typ);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut out[start + HEADER..],
                )
                .map_err(|_| failed())?;
            out.extend_from_slice(tag.as_ref());
        }
        Version::Tls12 => {
            let explicit = match keys.cipher {
                Cipher::Aes128Gcm | Cipher::Aes256Gcm => EXPLICIT_NONCE,
                Cipher::Chacha20Poly1305 => 0,
            };
            let len = (explicit + content.len() + TAG) as u16;
            let [hi, lo] = len.to_be_bytes();
            out.extend_from_slice(&[typ, 3, 3, hi, lo]);
            out.extend_from_slice(&nonce[aead::NONCE_LEN - explicit..]);
            out.extend_from_slice(content);
            let aad = Aad::from(aad12(keys.seq, typ, content.len()));
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    aad,
                    &mut out[start + HEADER + explicit..],
                )
                .map_err(|_| failed())?;
            out.extend_from_slice(tag.as_ref());
        }
    }
    keys.advance()
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
