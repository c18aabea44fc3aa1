//! The record layer against a rustls client, in memory: every suite and
//! version offered, records cut at every byte, key updates, alerts both
//! ways, and what a connection keeps when idle.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use super::super::handshake::{Handshake, Step};
use super::*;

/// Checks the server's signature, trusts its certificate: the test's own.
#[derive(Debug)]
struct TestCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for TestCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn server_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ServerConfig>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(load_config).clone()
}

fn load_config() -> Arc<rustls::ServerConfig> {
    let dir = std::env::temp_dir().join(format!("signalbox-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, include_str!("test-cert.pem")).unwrap();
    std::fs::write(&key, include_str!("test-key.pem")).unwrap();
    super::super::server_config(&cert, &key).unwrap()
}

fn client(suite: rustls::SupportedCipherSuite) -> ClientConnection {
    let provider = CryptoProvider {
        cipher_suites: vec![suite],
        ..ring::default_provider()
    };
    let algorithms = provider.signature_verification_algorithms;
    let version = match suite {
        rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TestCertificate(algorithms)))
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
}

const SUITES: [rustls::SupportedCipherSuite; 6] = [
    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// What the client has to send.
fn from_client(client: &mut ClientConnection) -> Vec<u8> {
    let mut bytes = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut bytes).unwrap();
    }
    bytes
}

/// Gives the client what the server sent: the plaintext it read, or its
/// error.
fn to_client(client: &mut ClientConnection, mut bytes: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let mut plaintext = Vec::new();
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).unwrap();
        client.process_new_packets()?;
        plaintext.extend(client_reads(client));
    }
    Ok(plaintext)
}

/// The plaintext the client has received.
fn client_reads(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match client.reader().read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(error) => panic!("client read: {error}"),
        }
    }
}

/// A handshake run to its end; `early` is written by the client before it
/// completes, so it travels with the client's Finished.
fn connect(
    suite: rustls::SupportedCipherSuite,
    early: &[u8],
) -> (ClientConnection, Records, Vec<u8>) {
    let mut client = client(suite);
    client.writer().write_all(early).unwrap();
    let mut handshake = Handshake::new(server_config()).unwrap();
    loop {
        match handshake.step().unwrap() {
            Step::Send => {
                to_client(&mut client, handshake.outgoing()).unwrap();
                handshake.sent();
            }
            Step::Receive => {
                let bytes = from_client(&mut client);
                assert!(!bytes.is_empty(), "the handshake stalled");
                handshake.received(&bytes);
            }
            Step::Done => break,
        }
    }
    let mut records = handshake.finish().unwrap();
    // What the client sent after its Finished and rustls did not decrypt.
    let mut received = vec![0; early.len()];
    let n = records.take_plaintext(&mut received);
    received.truncate(n);
    let rest = from_client(&mut client);
    received.extend(receive_all(&mut records, rest).unwrap());
    (client, records, received)
}

/// Everything the server reads from `bytes`, given in one piece.
fn receive_all(records: &mut Records, mut bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut out = vec![0; 100_000];
    let n = records.receive(&mut bytes, &mut out)?;
    out.truncate(n);
    let mut rest = vec![0; 100_000];
    let m = records.take_plaintext(&mut rest);
    out.extend_from_slice(&rest[..m]);
    Ok(out)
}

fn server_writes(records: &mut Records, data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(4 * MAX_RECORD);
    let mut at = 0;
    while at < data.len() {
        at += records.seal(&data[at..], &mut wire).unwrap();
    }
    wire
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn every_suite_carries_data_both_ways_after_a_rustls_handshake() {
    for suite in SUITES {
        let early = b"GET / HTTP/1.1\r\n\r\n";
        let (mut client, mut records, received) = connect(suite, early);
        assert_eq!(received, early, "{suite:?}: what came with the Finished");
        for len in [0, 1, 100, 5000, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 40_000] {
            let data = message(len);
            client.writer().write_all(&data).unwrap();
            let wire = from_client(&mut client);
            assert_eq!(
                receive_all(&mut records, wire).unwrap(),
                data,
                "{suite:?}: {len} in"
            );
            let wire = server_writes(&mut records, &data);
            assert_eq!(
                to_client(&mut client, &wire).unwrap(),
                data,
                "{suite:?}: {len} out"
            );
        }
        assert!(!records.mid_record());
    }
}

#[test]
fn records_cut_at_every_byte_give_the_same_plaintext() {
    for suite in [SUITES[0], SUITES[3], SUITES[5]] {
        let (mut client, mut records, _) = connect(suite, b"");
        for part in [&b"a"[..], b"", b"hello", &message(300)] {
            client.writer().write_all(part).unwrap();
        }
        let wire = from_client(&mut client);
        let mut expected = b"ahello".to_vec();
        expected.extend(message(300));
        // Every split of the stream into two reads, then one byte at a time.
        for cut in 0..=wire.len() {
            let mut copy = clone(&records);
            let mut got = receive_all(&mut copy, wire[..cut].to_vec()).unwrap();
            got.extend(receive_all(&mut copy, wire[cut..].to_vec()).unwrap());
            assert_eq!(got, expected, "{suite:?}: cut at {cut}");
            assert!(!copy.mid_record());
        }
        let mut got = Vec::new();
        for byte in &wire {
            let mut out = [0; 1];
            let n = records.receive(&mut [*byte], &mut out).unwrap();
            got.extend_from_slice(&out[..n]);
            let mut rest = [0; 1000];
            let m = records.take_plaintext(&mut rest);
            got.extend_from_slice(&rest[..m]);
        }
        assert_eq!(got, expected, "{suite:?}: a byte at a time");
    }
}

/// The same record layer state, for trying one stream several ways. Only
/// what these tests touch is copied; the key schedule is not.
fn clone(records: &Records) -> Records {
    Records {
        version: records.version,
        rx: copy_keys(&records.rx),
        tx: copy_keys(&records.tx),
        limit: records.limit,
        incoming: records.incoming.clone(),
        plaintext: records.plaintext.clone(),
        taken: records.taken,
        outgoing: records.outgoing.clone(),
        sent: records.sent,
        peer_closed: records.peer_closed,
        closed: records.closed,
        failed: records.failed,
        warnings: records.warnings,
    }
}

fn copy_keys(keys: &Keys) -> Keys {
    Keys {
        cipher: keys.cipher,
        key: keys.key,
        iv: keys.iv,
        seq: keys.seq,
        secret: keys.secret,
    }
}

#[test]
fn a_short_read_takes_the_rest_later_in_order() {
    let (mut client, mut records, _) = connect(SUITES[0], b"");
    let data = message(10_000);
    client.writer().write_all(&data).unwrap();
    let mut wire = from_client(&mut client);
    let mut out = [0; 100];
    assert_eq!(records.receive(&mut wire, &mut out).unwrap(), 100);
    let mut got = out.to_vec();
    loop {
        let n = records.take_plaintext(&mut out);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&out[..n]);
    }
    assert_eq!(got, data);
    assert_eq!(records.plaintext.capacity(), 0, "nothing kept once taken");
}

#[test]
fn key_updates_from_the_client_are_followed_and_answered() {
    for suite in &SUITES[..3] {
        key_updates_with(*suite);
    }
}

fn key_updates_with(suite: rustls::SupportedCipherSuite) {
    let (mut client, mut records, _) = connect(suite, b"");
    for round in 0..3 {
        // rustls asks for the server's update too (update_requested).
        client.refresh_traffic_keys().unwrap();
        client.writer().write_all(b"after the update").unwrap();
        let wire = from_client(&mut client);
        assert_eq!(
            receive_all(&mut records, wire).unwrap(),
            b"after the update",
            "round {round}"
        );
        let answer = records.unsent().to_vec();
        assert!(!answer.is_empty(), "the server's own key update");
        records.sent(answer.len());
        to_client(&mut client, &answer).unwrap();
        let wire = server_writes(&mut records, b"from the new key");
        assert_eq!(to_client(&mut client, &wire).unwrap(), b"from the new key");
    }
}

#[test]
fn a_tls13_connection_moves_to_a_new_key_at_the_confidentiality_limit() {
    let (mut client, mut records, _) = connect(SUITES[0], b"");
    records.limit = records.tx.seq + 2;
    for i in 0..5u8 {
        let wire = server_writes(&mut records, &[i; 10]);
        assert_eq!(to_client(&mut client, &wire).unwrap(), [i; 10]);
        records.limit = records.tx.seq + 2;
    }
}

#[test]
fn a_tls12_connection_ends_at_the_confidentiality_limit() {
    let (mut client, mut records, _) = connect(SUITES[3], b"");
    records.limit = records.tx.seq;
    let mut wire = Vec::with_capacity(MAX_RECORD);
    assert!(records.seal(b"x", &mut wire).is_err());
    to_client(&mut client, records.unsent()).unwrap();
    // The client saw close_notify: its reader ends cleanly.
    let mut buf = [0; 10];
    assert_eq!(client.reader().read(&mut buf).unwrap(), 0);
}

#[test]
fn close_notify_both_ways() {
    for suite in [SUITES[0], SUITES[3]] {
        let (mut client, mut records, _) = connect(suite, b"");
        client.writer().write_all(b"last words").unwrap();
        client.send_close_notify();
        let mut wire = from_client(&mut client);
        wire.extend_from_slice(b"anything after is not read");
        assert_eq!(receive_all(&mut records, wire).unwrap(), b"last words");
        assert!(records.peer_closed());
        records.close();
        assert!(records.seal(b"no more", &mut Vec::new()).is_err());
        to_client(&mut client, records.unsent()).unwrap();
        let mut buf = [0; 10];
        assert_eq!(client.reader().read(&mut buf).unwrap(), 0, "{suite:?}");
    }
}

/// The alert the client got from the server's `unsent`.
fn alert_at_client(client: &mut ClientConnection, records: &Records) -> rustls::Error {
    to_client(client, records.unsent()).expect_err("an alert")
}

#[test]
fn a_corrupted_record_ends_the_connection_with_bad_record_mac() {
    for suite in [SUITES[0], SUITES[3], SUITES[5]] {
        let (mut client, mut records, _) = connect(suite, b"");
        client.writer().write_all(b"hello").unwrap();
        let mut wire = from_client(&mut client);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let error = receive_all(&mut records, wire).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            alert_at_client(&mut client, &records),
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
            "{suite:?}"
        );
        // Nothing more is read or kept.
        assert_eq!(
            receive_all(&mut records, vec![23, 3, 3, 0, 1, 0]).unwrap(),
            b""
        );
        assert!(!records.mid_record());
    }
}

#[test]
fn an_oversized_record_ends_the_connection_before_its_body_is_kept() {
    for (suite, max) in [(SUITES[0], MAX_BODY_13), (SUITES[3], MAX_BODY_12)] {
        let (mut client, mut records, _) = connect(suite, b"");
        let [hi, lo] = ((max + 1) as u16).to_be_bytes();
        let error = receive_all(&mut records, vec![23, 3, 3, hi, lo]).unwrap_err();
        assert_eq!(error.to_string(), "record too long");
        assert_eq!(
            alert_at_client(&mut client, &records),
            rustls::Error::AlertReceived(rustls::AlertDescription::RecordOverflow)
        );
        // A body of exactly the limit is waited for.
        let (_, mut records, _) = connect(suite, b"");
        let [hi, lo] = (max as u16).to_be_bytes();
        receive_all(&mut records, vec![23, 3, 3, hi, lo]).unwrap();
        assert!(records.mid_record());
    }
}

#[test]
fn records_a_tls13_client_must_not_send_end_the_connection() {
    let cases: [(&[u8], &str); 3] = [
        (
            &[21, 3, 3, 0, 2, 1, 0],
            "unencrypted record after the handshake",
        ),
        (
            &[20, 3, 3, 0, 1, 1],
            "unencrypted record after the handshake",
        ),
        (&[23, 3, 3, 0, 3, 1, 2, 3], "a record failed to decrypt"),
    ];
    for (bytes, why) in cases {
        let (mut client, mut records, _) = connect(SUITES[0], b"");
        let error = receive_all(&mut records, bytes.to_vec()).unwrap_err();
        assert_eq!(error.to_string(), why);
        assert!(
            alert_at_client(&mut client, &records)
                .to_string()
                .contains("received fatal alert")
        );
    }
}

#[test]
fn a_fatal_alert_from_the_client_ends_it_without_an_answer() {
    let (_, mut records, _) = connect(SUITES[0], b"");
    // Sealed as the client would: with the client's key, as the server
    // reads it.
    let mut alert = Vec::new();
    let key = records.rx.expand();
    seal(
        Version::Tls13,
        &mut copy_keys(&records.rx),
        &key,
        ALERT,
        &[FATAL, 40],
        &mut alert,
    )
    .unwrap();
    let error = receive_all(&mut records, alert).unwrap_err();
    assert_eq!(error.to_string(), "the client sent a fatal alert");
    assert!(records.unsent().is_empty());
}

#[test]
fn a_tls12_renegotiation_is_refused_with_a_warning_and_the_connection_goes_on() {
    let (_, mut records, _) = connect(SUITES[3], b"");
    // Sealed as the client would, with its key and next sequence numbers.
    let key = records.rx.expand();
    let mut keys = copy_keys(&records.rx);
    let mut wire = Vec::new();
    seal(
        Version::Tls12,
        &mut keys,
        &key,
        HANDSHAKE,
        &[CLIENT_HELLO, 0, 0, 0],
        &mut wire,
    )
    .unwrap();
    seal(
        Version::Tls12,
        &mut keys,
        &key,
        APPLICATION_DATA,
        b"still here",
        &mut wire,
    )
    .unwrap();
    assert_eq!(receive_all(&mut records, wire).unwrap(), b"still here");
    assert!(!records.unsent().is_empty(), "no_renegotiation");
}

#[test]
fn warnings_past_a_few_end_the_connection() {
    for (suite, version, alert) in [
        (SUITES[0], Version::Tls13, [WARNING, USER_CANCELED]),
        (SUITES[3], Version::Tls12, [WARNING, 42]),
    ] {
        let (_, mut records, _) = connect(suite, b"");
        let key = records.rx.expand();
        let mut keys = copy_keys(&records.rx);
        for _ in 0..MAX_WARNINGS {
            let mut wire = Vec::new();
            seal(version, &mut keys, &key, ALERT, &alert, &mut wire).unwrap();
            assert_eq!(receive_all(&mut records, wire).unwrap(), b"");
        }
        let mut wire = Vec::new();
        seal(version, &mut keys, &key, ALERT, &alert, &mut wire).unwrap();
        let error = receive_all(&mut records, wire).unwrap_err();
        assert_eq!(error.to_string(), "too many warning alerts", "{suite:?}");
    }
}

#[test]
fn an_idle_connection_keeps_only_its_keys() {
    let (mut client, mut records, _) = connect(SUITES[0], b"");
    client.writer().write_all(&message(30_000)).unwrap();
    let wire = from_client(&mut client);
    let (first, second) = wire.split_at(20_000);
    receive_all(&mut records, first.to_vec()).unwrap();
    assert!(records.incoming.capacity() > 0, "a record in part is kept");
    receive_all(&mut records, second.to_vec()).unwrap();
    let mut out = Vec::with_capacity(4 * MAX_RECORD);
    records.seal(&message(30_000), &mut out).unwrap();
    records.keep_unsent(&out[1000..]);
    records.sent(out.len() - 1000);
    assert_eq!(
        (
            records.incoming.capacity(),
            records.plaintext.capacity(),
            records.outgoing.capacity()
        ),
        (0, 0, 0)
    );
    let size = std::mem::size_of::<Records>();
    assert!(size <= 320, "Records is {size} bytes");
}

/// A small deterministic generator, for inputs no client would send.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn arbitrary_bytes_and_arbitrary_sealed_records_never_panic_and_end_cleanly() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for suite in [SUITES[0], SUITES[2], SUITES[3], SUITES[5]] {
        let (_, template, _) = connect(suite, b"");
        for round in 0..300 {
            let mut records = clone(&template);
            let version = records.version;
            let key = records.rx.expand();
            let mut keys = copy_keys(&records.rx);
            // Records sealed with the client's key (so they pass the MAC)
            // of any type and content, some headers and bytes flipped.
            let mut wire = Vec::new();
            for _ in 0..1 + noise.below(6) {
                let typ = [ALERT, HANDSHAKE, APPLICATION_DATA, 0, 20, 99][noise.below(6)];
                let content: Vec<u8> = (0..noise.below(40)).map(|_| noise.next() as u8).collect();
                seal(version, &mut keys, &key, typ, &content, &mut wire).unwrap();
            }
            if round % 3 == 0 {
                let at = noise.below(wire.len());
                wire[at] ^= 1 << noise.below(8);
            }
            if round % 5 == 0 {
                wire.extend((0..noise.below(300)).map(|_| noise.next() as u8));
            }
            // Given in arbitrary pieces, to out buffers of arbitrary sizes.
            let mut at = 0;
            let mut failed = false;
            while at < wire.len() {
                let n = 1 + noise.below(wire.len() - at);
                let mut piece = wire[at..at + n].to_vec();
                let mut out = vec![0; noise.below(64)];
                match records.receive(&mut piece, &mut out) {
                    Ok(got) => assert!(got <= out.len()),
                    Err(_) => failed = true,
                }
                at += n;
            }
            let mut rest = [0; 256];
            while records.take_plaintext(&mut rest) > 0 {}
            if failed {
                // After an error nothing more is read or kept.
                assert_eq!(
                    receive_all(&mut records, vec![23, 3, 3, 0, 0]).unwrap(),
                    b""
                );
                assert!(!records.mid_record());
                assert!(
                    records
                        .seal(b"x", &mut Vec::with_capacity(MAX_RECORD))
                        .is_err()
                );
            }
        }
    }
}
