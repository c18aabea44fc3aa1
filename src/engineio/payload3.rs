//! Engine.IO 3 long-polling payloads (`--allow-eio3`): no I/O, bytes in and
//! packets out, beside protocol 4's `\x1e`-separated ones in `packet`.
//!
//! A text payload is each packet as `<length>:<packet>`, the length counted
//! in UTF-16 code units, as a JavaScript string's; a binary message in it
//! is `b4<base64>`. A client that can take binary (XHR2; it sends no
//! `b64=1`) gets a payload holding binary messages in the binary form:
//! each packet as a 0 (text) or 1 (binary) byte, its length in bytes as one
//! byte per decimal digit, 255, then the packet (a binary message's type
//! byte 4, then its data).

use super::packet::{Data, DecodeError, Packet, decode_text};
use crate::base64;

/// A payload's longest length prefix, in digits: a body is at most
/// `maxPayload` bytes, far under ten digits.
const MAX_DIGITS: usize = 10;

/// A long-polling response body, with its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `text/plain; charset=UTF-8`.
    Text(String),
    /// `application/octet-stream`.
    Binary(Vec<u8>),
}

/// Encodes `packets` for a GET; in the binary form when one is a binary
/// message and the client takes binary (`binary`).
pub fn encode(packets: &[Packet], binary: bool) -> Body {
    let any_binary = packets
        .iter()
        .any(|p| matches!(p, Packet::Message(Data::Binary(_))));
    if binary && any_binary {
        let mut out = Vec::new();
        for packet in packets {
            let (kind, bytes) = match packet {
                Packet::Message(Data::Binary(data)) => {
                    let mut bytes = Vec::with_capacity(1 + data.len());
                    bytes.push(4);
                    bytes.extend_from_slice(data);
                    (1, bytes)
                }
                other => (0, text_of(other).into_bytes()),
            };
            out.push(kind);
            out.extend(bytes.len().to_string().bytes().map(|digit| digit - b'0'));
            out.push(255);
            out.extend_from_slice(&bytes);
        }
        return Body::Binary(out);
    }
    let mut out = String::new();
    for packet in packets {
        let text = match packet {
            Packet::Message(Data::Binary(data)) => {
                let mut text = String::from("b4");
                base64::encode_into(data, &mut text);
                text
            }
            other => text_of(other),
        };
        out.push_str(&text.encode_utf16().count().to_string());
        out.push(':');
        out.push_str(&text);
    }
    Body::Text(out)
}

/// A packet's text, as on a WebSocket.
fn text_of(packet: &Packet) -> String {
    let mut out = String::new();
    packet.encode_polling(&mut out);
    out
}

/// Decodes a POST body: the binary form when it starts with a 0 or 1
/// byte, else text.
pub fn decode(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    match body.first() {
        None => Err(DecodeError::Empty),
        Some(0 | 1) => decode_binary(body),
        Some(_) => {
            let text = std::str::from_utf8(body).map_err(|_| DecodeError::Malformed)?;
            decode_text_payload(text)
        }
    }
}

fn decode_text_payload(mut text: &str) -> Result<Vec<Packet>, DecodeError> {
    let mut packets = Vec::new();
    while !text.is_empty() {
        let (digits, rest) = text.split_once(':').ok_or(DecodeError::Malformed)?;
        if digits.is_empty() || digits.len() > MAX_DIGITS {
            return Err(DecodeError::Malformed);
        }
        let units: usize = digits.parse().map_err(|_| DecodeError::Malformed)?;
        // `units` UTF-16 code units of `rest`, ending on a character.
        let mut counted = 0;
        let mut end = rest.len();
        for (at, c) in rest.char_indices() {
            if counted == units {
                end = at;
                break;
            }
            counted += c.len_utf16();
        }
        if counted != units {
            return Err(DecodeError::Malformed);
        }
        let (packet, after) = rest.split_at(end);
        packets.push(decode_packet(packet)?);
        text = after;
    }
    Ok(packets)
}

/// One packet of a text payload: as protocol 4's, but for a binary
/// message, `b4<base64>`.
fn decode_packet(text: &str) -> Result<Packet, DecodeError> {
    match text.strip_prefix('b') {
        Some(rest) => {
            let data = rest.strip_prefix('4').ok_or(DecodeError::Malformed)?;
            let bytes = base64::decode(data).map_err(|_| DecodeError::InvalidBase64)?;
            Ok(Packet::Message(Data::Binary(bytes)))
        }
        None => decode_text(text),
    }
}

fn decode_binary(mut body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut packets = Vec::new();
    while let Some((&kind, rest)) = body.split_first() {
        let digits_end = rest
            .iter()
            .take(MAX_DIGITS + 1)
            .position(|&b| b == 255)
            .filter(|&n| n > 0 && n <= MAX_DIGITS)
            .ok_or(DecodeError::Malformed)?;
        let mut length = 0usize;
        for &digit in &rest[..digits_end] {
            if digit > 9 {
                return Err(DecodeError::Malformed);
            }
            length = length * 10 + usize::from(digit);
        }
        let rest = &rest[digits_end + 1..];
        let packet = rest.get(..length).ok_or(DecodeError::Malformed)?;
        packets.push(match kind {
            0 => {
                let text = std::str::from_utf8(packet).map_err(|_| DecodeError::Malformed)?;
                decode_text(text)?
            }
            1 => match packet.split_first() {
                Some((4, data)) => Packet::Message(Data::Binary(data.to_vec())),
                _ => return Err(DecodeError::Malformed),
            },
            _ => return Err(DecodeError::Malformed),
        });
        body = &rest[length..];
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Packet {
        Packet::Message(Data::Text(s.into()))
    }

    fn binary(b: &[u8]) -> Packet {
        Packet::Message(Data::Binary(b.to_vec()))
    }

    #[test]
    fn text_payloads_count_utf16_units() {
        let packets = [
            Packet::Open(r#"{"sid":"x"}"#.into()),
            text("€ \u{1f600}"),
            Packet::Ping("probe".into()),
        ];
        let Body::Text(body) = encode(&packets, true) else {
            panic!("no binary message, no binary payload")
        };
        // "4€ 😀" is 1 + 1 + 1 + 2 UTF-16 units.
        assert_eq!(body, "12:0{\"sid\":\"x\"}5:4€ \u{1f600}6:2probe");
        assert_eq!(decode(body.as_bytes()), Ok(packets.to_vec()));
        assert_eq!(decode(b"1:2"), Ok(vec![Packet::Ping(String::new())]));
        assert_eq!(decode(b"2:40"), Ok(vec![text("0")]));
    }

    #[test]
    fn binary_messages_are_base64_or_the_binary_form() {
        let packets = [text("hi"), binary(&[1, 2, 255])];
        assert_eq!(encode(&packets, false), Body::Text("3:4hi6:b4AQL/".into()));
        let Body::Binary(body) = encode(&packets, true) else {
            panic!("a binary message for an XHR2 client")
        };
        assert_eq!(body, [0, 3, 255, b'4', b'h', b'i', 1, 4, 255, 4, 1, 2, 255]);
        assert_eq!(decode(&body), Ok(packets.to_vec()));
        assert_eq!(decode(b"6:b4AQL/"), Ok(vec![binary(&[1, 2, 255])]));
        // Ten bytes or more: a digit per byte.
        let long = binary(&[7; 12]);
        let Body::Binary(body) = encode(std::slice::from_ref(&long), true) else {
            panic!()
        };
        assert_eq!(&body[..4], [1, 1, 3, 255]);
        assert_eq!(decode(&body), Ok(vec![long]));
    }

    #[test]
    fn malformed_payloads() {
        for bad in [
            &b""[..],
            b"4",
            b":4a",
            b"x:4a",
            b"3:4a",
            b"2:4a2:",
            b"99999999999:4a",
            b"1:x",
            b"3:b5A",
            b"4:b4!!",
            &[0, 255, b'4'],
            &[0, 1, 255],
            &[0, 2, 255, b'4'],
            &[0, 10, 255, b'4'],
            &[1, 1, 255, 3],
            &[2, 1, 255, b'4'],
            &[0, 1, 0xff, 0xff],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        // A length that ends inside a surrogate pair.
        assert!(decode("2:4\u{1f600}".as_bytes()).is_err());
    }
}
