//! The fuzz targets' properties (`signalbox::fuzzing`) on stable Rust: seed
//! inputs mutated by a deterministic generator, a few thousand cases per
//! decoder. `fuzz/` runs the same properties under libFuzzer.

use signalbox::fuzzing;

/// xorshift64*: small, fast, and the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Pieces that matter to the grammars under test.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\x1e",
    b"-",
    b",",
    b"/",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b"0",
    b"9",
    b"18446744073709551616",
    b"b",
    b"4",
    b"5",
    b"\xff",
    b"\xfe",
    b"\xe2\x82",
    b"\0",
    b"{\"_placeholder\":true,\"num\":0}",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b";ext=1",
    b"probe",
    b"\\u0000",
    b"1e999",
    b"null",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 if !data.is_empty() => {
                let end = (at + rng.below(8)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + rng.below(16)).min(data.len());
                let piece = data[start..end].to_vec();
                data.splice(at..at, piece);
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn run(seeds: &[&[u8]], cases: usize, property: fn(&[u8])) {
    let mut rng = Rng(0x5167_6e61_6c62_6f78);
    for seed in seeds {
        property(seed);
    }
    for _ in 0..cases {
        let seed = seeds[rng.below(seeds.len())];
        property(&mutate(&mut rng, seed));
    }
}

#[test]
fn http_heads() {
    run(
        &[
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x?sid=1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ],
        20_000,
        fuzzing::http_head,
    );
}

#[test]
fn chunked_bodies() {
    run(
        &[
            b"\x05a\r\nhello\r\n0\r\n\r\n",
            b"\x023\r\nabc\r\n3;x=y\r\ndef\r\n0\r\nTrailer: 1\r\n\r\n",
            b"\x00ffffffff\r\n",
        ],
        20_000,
        fuzzing::chunked_body,
    );
}

#[test]
fn engineio_packets() {
    run(
        &[
            b"4hello",
            b"2probe",
            b"bAQIDBA==",
            b"4a\x1e2\x1ebAQ==\x1e1",
            b"0{\"sid\":\"x\"}",
            b"6",
        ],
        20_000,
        fuzzing::engineio_packet,
    );
}

#[test]
fn engineio3_payloads() {
    run(
        &[
            b"6:4hello",
            b"1:2",
            b"6:b4AQI=",
            b"2:4a1:21:1",
            b"12:0{\"sid\":\"x\"}",
            b"\x00\x03\xff4hi\x01\x04\xff\x04\x01\x02\xff",
            "5:4\u{20ac} \u{1f600}".as_bytes(),
        ],
        20_000,
        fuzzing::engineio3_payload,
    );
}

#[test]
fn socketio_packets() {
    run(
        &[
            b"0/custom,{\"token\":\"abc\"}",
            b"2/chat,12[\"message\",1,\"2\",{\"3\":[true]}]",
            // Binary events and acks with their attachments after 0xff, a
            // text message after 0xfe (see fuzzing::socketio_packet).
            b"52-[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]\xff\x01\x02\xffabc",
            b"51-/chat,9[\"m\",{\"_placeholder\":true,\"num\":0}]\xff\x00\xfe2[\"next\"]",
            b"61-4[{\"_placeholder\":true,\"num\":0}]\xffxyz\xfe51-[\"m\",{\"_placeholder\":true,\"num\":0}]\xff",
            b"51-[\"big\",{\"_placeholder\":true,\"num\":0}]\xff0123456789012345678901234567890123456789012345678901234567890123456789",
            b"3456[1,\"x\"]",
            b"62-/a,7[{\"_placeholder\":true,\"num\":0}]",
            b"4{\"message\":\"Invalid namespace\"}",
            b"1/custom,",
        ],
        20_000,
        fuzzing::socketio_packet,
    );
}

#[test]
fn signaling_events() {
    run(
        &[
            b"\x00{\"userId\":\"alice\"}",
            b"\x01{\"to\":\"peer\",\"from\":\"x\",\"offer\":{\"type\":\"offer\",\"sdp\":\"v=0\"}}",
            b"\x02{\"to\":\"peer\",\"answer\":{\"sdp\":\"v=0\"}}",
            b"\x03{\"to\":\"peer\"}",
            b"\x04{\"to\":\"peer\",\"from\":\"fuzz\"}",
            b"\x05{\"to\":\"peer\",\"candidate\":{\"candidate\":\"c\",\"sdpMid\":\"0\"}}",
            b"\x06{\"userId\":\"fuzz\"}",
        ],
        20_000,
        fuzzing::signaling_event,
    );
}
