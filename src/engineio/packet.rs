//! The Engine.IO protocol 4 packet codec: no I/O, bytes in and packets out.
//!
//! Over WebSocket every packet is one frame: text frames carry `<type><data>`,
//! binary frames carry a binary message as is. Over HTTP long-polling several
//! packets travel in one body separated by `\x1e`, binary messages as
//! `b<base64>`.

use std::fmt;

use crate::base64;

/// The record separator between packets of a long-polling payload.
pub const SEPARATOR: char = '\x1e';

/// The data of a message packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A UTF-8 text message.
    Text(String),
    /// A binary message: a binary frame on WebSocket, `b<base64>` on polling.
    Binary(Vec<u8>),
}

impl Data {
    /// The payload size in bytes, as counted against `maxPayload`.
    pub fn len(&self) -> usize {
        match self {
            Data::Text(s) => s.len(),
            Data::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: the handshake, carrying its JSON.
    Open(String),
    /// `1`: the transport can be closed.
    Close,
    /// `2`: heartbeat ping; `2probe` during an upgrade.
    Ping(String),
    /// `3`: heartbeat pong; `3probe` during an upgrade.
    Pong(String),
    /// `4`: a message.
    Message(Data),
    /// `5`: completes an upgrade.
    Upgrade,
    /// `6`: nothing; releases a pending long-polling request.
    Noop,
}

/// Why bytes could not be decoded into a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// No text at all, not even a type character (two separators in a row, say).
    Empty,
    /// The first character is not a packet type.
    UnknownType(char),
    /// A `b` packet whose payload is not valid base64.
    InvalidBase64,
    /// An Engine.IO 3 payload whose framing (lengths, separators) is broken.
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty packet"),
            DecodeError::UnknownType(c) => write!(f, "unknown packet type {c:?}"),
            DecodeError::InvalidBase64 => f.write_str("invalid base64 in binary packet"),
            DecodeError::Malformed => f.write_str("malformed payload"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one text-encoded packet (a WebSocket text frame, or one packet of a
/// long-polling payload).
///
/// ```
/// use signalbox::engineio::packet::{decode_text, Data, Packet};
/// assert_eq!(decode_text("4hello"), Ok(Packet::Message(Data::Text("hello".into()))));
/// assert_eq!(decode_text("bAQI="), Ok(Packet::Message(Data::Binary(vec![1, 2]))));
/// assert!(decode_text("abc").is_err());
/// ```
pub fn decode_text(text: &str) -> Result<Packet, DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => Packet::Open(rest.to_owned()),
        '1' => Packet::Close,
        '2' => Packet::Ping(rest.to_owned()),
        '3' => Packet::Pong(rest.to_owned()),
        '4' => Packet::Message(Data::Text(rest.to_owned())),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        'b' => Packet::Message(Data::Binary(
            base64::decode(rest).map_err(|_| DecodeError::InvalidBase64)?,
        )),
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// Decodes a whole long-polling request body into its packets.
///
/// ```
/// use signalbox::engineio::packet::{decode_payload, Packet};
/// let packets = decode_payload("3\x1e1").unwrap();
/// assert_eq!(packets, vec![Packet::Pong(String::new()), Packet::Close]);
/// ```
pub fn decode_payload(body: &str) -> Result<Vec<Packet>, DecodeError> {
    body.split(SEPARATOR).map(decode_text).collect()
}

/// What a packet becomes on a WebSocket: one text or one binary frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame: the type character, then the packet's text.
    Text(String),
    /// A binary frame: a binary message's bytes as they are, no type byte.
    Binary(Vec<u8>),
}

impl Packet {
    fn type_char(&self) -> char {
        match self {
            Packet::Open(_) => '0',
            Packet::Close => '1',
            Packet::Ping(_) => '2',
            Packet::Pong(_) => '3',
            Packet::Message(_) => '4',
            Packet::Upgrade => '5',
            Packet::Noop => '6',
        }
    }

    fn text_data(&self) -> &str {
        match self {
            Packet::Open(s) | Packet::Ping(s) | Packet::Pong(s) => s,
            Packet::Message(Data::Text(s)) => s,
            _ => "",
        }
    }

    /// Encodes the packet as one WebSocket frame.
    ///
    /// ```
    /// use signalbox::engineio::packet::{Data, Frame, Packet};
    /// let text = Packet::Message(Data::Text("hi".into())).into_frame();
    /// assert_eq!(text, Frame::Text("4hi".into()));
    /// let binary = Packet::Message(Data::Binary(vec![1])).into_frame();
    /// assert_eq!(binary, Frame::Binary(vec![1]));
    /// ```
    pub fn into_frame(self) -> Frame {
        match self {
            Packet::Message(Data::Binary(bytes)) => Frame::Binary(bytes),
            Packet::Message(Data::Text(mut s)) => {
                s.insert(0, '4');
                Frame::Text(s)
            }
            other => {
                let mut s = String::with_capacity(1 + other.text_data().len());
                s.push(other.type_char());
                s.push_str(other.text_data());
                Frame::Text(s)
            }
        }
    }

    /// Appends the packet's long-polling encoding to `out`.
    pub fn encode_polling(&self, out: &mut String) {
        match self {
            Packet::Message(Data::Binary(bytes)) => {
                out.push('b');
                base64::encode_into(bytes, out);
            }
            other => {
                out.push(other.type_char());
                out.push_str(other.text_data());
            }
        }
    }

    /// The size this packet adds to an outbound queue, for its bound.
    pub fn queued_size(&self) -> usize {
        1 + match self {
            Packet::Message(data) => data.len(),
            other => other.text_data().len(),
        }
    }
}

/// Encodes packets as one long-polling response body, separated by `\x1e`.
///
/// ```
/// use signalbox::engineio::packet::{encode_payload, Data, Packet};
/// let body = encode_payload(&[Packet::Message(Data::Text("a".into())), Packet::Ping(String::new())]);
/// assert_eq!(body, "4a\x1e2");
/// ```
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> String {
    let mut out = String::new();
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        packet.encode_polling(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Packet {
        Packet::Message(Data::Text(s.into()))
    }

    #[test]
    fn every_type_round_trips_as_text() {
        let packets = [
            Packet::Open(r#"{"sid":"x"}"#.into()),
            Packet::Close,
            Packet::Ping(String::new()),
            Packet::Ping("probe".into()),
            Packet::Pong(String::new()),
            Packet::Pong("probe".into()),
            text("hello"),
            text(""),
            text("€ and \u{1f600}"),
            Packet::Upgrade,
            Packet::Noop,
        ];
        for packet in packets {
            let Frame::Text(frame) = packet.clone().into_frame() else {
                panic!("text packet became binary");
            };
            assert_eq!(decode_text(&frame), Ok(packet.clone()));
            assert_eq!(decode_payload(&encode_payload([&packet])), Ok(vec![packet]));
        }
    }

    #[test]
    fn binary_is_a_raw_frame_and_base64_over_polling() {
        let packet = Packet::Message(Data::Binary(vec![1, 2, 3, 4]));
        assert_eq!(packet.clone().into_frame(), Frame::Binary(vec![1, 2, 3, 4]));
        assert_eq!(encode_payload([&packet]), "bAQIDBA==");
        assert_eq!(decode_text("bAQIDBA=="), Ok(packet));
        assert_eq!(decode_text("b"), Ok(Packet::Message(Data::Binary(vec![]))));
    }

    #[test]
    fn payload_splitter() {
        assert_eq!(
            decode_payload("4test1\x1e4test2\x1e4test3"),
            Ok(vec![text("test1"), text("test2"), text("test3")])
        );
        assert_eq!(
            decode_payload("4hello\x1ebAQIDBA=="),
            Ok(vec![
                text("hello"),
                Packet::Message(Data::Binary(vec![1, 2, 3, 4]))
            ])
        );
        assert_eq!(decode_payload("4"), Ok(vec![text("")]));
        let packets = vec![text("a"), Packet::Pong(String::new()), text("b")];
        assert_eq!(encode_payload(&packets), "4a\x1e3\x1e4b");
    }

    #[test]
    fn malformed_input() {
        let table = [
            ("", DecodeError::Empty),
            ("abc", DecodeError::UnknownType('a')),
            ("7", DecodeError::UnknownType('7')),
            ("9x", DecodeError::UnknownType('9')),
            ("\u{1f600}", DecodeError::UnknownType('\u{1f600}')),
            ("b!!!!", DecodeError::InvalidBase64),
            ("bA", DecodeError::InvalidBase64),
        ];
        for (input, error) in table {
            assert_eq!(decode_text(input), Err(error), "{input:?}");
        }
        // One bad packet spoils a payload, wherever it sits.
        assert_eq!(decode_payload(""), Err(DecodeError::Empty));
        assert_eq!(decode_payload("4a\x1e"), Err(DecodeError::Empty));
        assert_eq!(decode_payload("\x1e4a"), Err(DecodeError::Empty));
        assert_eq!(
            decode_payload("4a\x1ex"),
            Err(DecodeError::UnknownType('x'))
        );
    }

    #[test]
    fn queued_size_counts_payload_bytes() {
        assert_eq!(text("hello").queued_size(), 6);
        assert_eq!(Packet::Message(Data::Binary(vec![0; 10])).queued_size(), 11);
        assert_eq!(Packet::Noop.queued_size(), 1);
    }
}
