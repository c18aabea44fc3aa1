//! The Socket.IO protocol 5 packet codec: no I/O, text in and packets out.
//!
//! A packet is `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`.
//! Binary events and acks announce a number of attachments that follow as
//! separate binary Engine.IO messages; their JSON keeps the
//! `{"_placeholder":true,"num":N}` objects that stand for them.
//!
//! Arguments are kept as raw JSON text ([`RawValue`]) so that a payload which
//! is only relayed is never parsed into a tree and re-encoded.

use std::fmt;

use serde_json::value::RawValue;

/// The most attachments one binary packet may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// Event names the protocol reserves; a client may not emit them.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// One decoded Socket.IO packet.
#[derive(Debug)]
pub enum Packet {
    /// `0`: connect to a namespace, with an optional auth object.
    Connect {
        /// The namespace, `/` by default.
        nsp: String,
        /// The auth payload, always a JSON object when present.
        auth: Option<Box<RawValue>>,
    },
    /// `1`: leave a namespace.
    Disconnect {
        /// The namespace to leave, `/` by default.
        nsp: String,
    },
    /// `2` or `5`: an event, optionally asking for an ack.
    Event {
        /// The namespace, `/` by default.
        nsp: String,
        /// The ack id, when the sender wants an answer.
        id: Option<u64>,
        /// The event's name: a string that is not reserved, or a number's JSON text.
        event: String,
        /// The arguments after the name.
        args: Vec<Box<RawValue>>,
        /// How many binary attachments follow (0 for a plain event).
        attachments: usize,
    },
    /// `3` or `6`: the answer to an event that asked for an ack.
    Ack {
        /// The namespace, `/` by default.
        nsp: String,
        /// The ack id being answered.
        id: u64,
        /// The ack's arguments.
        args: Vec<Box<RawValue>>,
        /// How many binary attachments follow (0 for a plain ack).
        attachments: usize,
    },
    /// `4`: a refused connection.
    ConnectError {
        /// The namespace, `/` by default.
        nsp: String,
        /// The error, a JSON object or string.
        data: Box<RawValue>,
    },
}

/// Why text could not be decoded into a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// No text at all, not even a type digit.
    Empty,
    /// The first character is not a packet type.
    UnknownType,
    /// A binary packet without a valid `<n>-` attachment count.
    IllegalAttachments,
    /// More attachments than [`MAX_ATTACHMENTS`].
    TooManyAttachments,
    /// An ack id that is not a number that fits in 64 bits.
    InvalidAckId,
    /// The JSON data is not valid JSON.
    InvalidJson,
    /// The JSON data is not of the shape this packet type requires.
    InvalidPayload,
    /// An event named like one of the protocol's reserved events.
    ReservedEvent,
    /// An ack packet without an ack id.
    MissingAckId,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Empty => "empty packet",
            DecodeError::UnknownType => "unknown packet type",
            DecodeError::IllegalAttachments => "illegal attachments",
            DecodeError::TooManyAttachments => "too many attachments",
            DecodeError::InvalidAckId => "invalid ack id",
            DecodeError::InvalidJson => "invalid JSON",
            DecodeError::InvalidPayload => "invalid payload",
            DecodeError::ReservedEvent => "reserved event name",
            DecodeError::MissingAckId => "ack without id",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one Socket.IO packet from the text of an Engine.IO message.
///
/// ```
/// use signalbox::socketio::packet::{decode, Packet};
/// let Packet::Event { nsp, id, event, args, .. } = decode(r#"2/chat,7["hi",1]"#).unwrap() else {
///     unreachable!()
/// };
/// assert_eq!((nsp.as_str(), id, event.as_str(), args[0].get()), ("/chat", Some(7), "hi", "1"));
/// ```
pub fn decode(text: &str) -> Result<Packet, DecodeError> {
    let kind = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    // Every type is one ASCII digit; checking first keeps the slice below on
    // a character boundary.
    if !kind.is_ascii_digit() {
        return Err(DecodeError::UnknownType);
    }
    let mut rest = &text[1..];

    let binary = matches!(kind, b'5' | b'6');
    let mut attachments = 0;
    if binary {
        let dash = rest.find('-').ok_or(DecodeError::IllegalAttachments)?;
        let count = &rest[..dash];
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::IllegalAttachments);
        }
        attachments = count
            .parse::<usize>()
            .map_err(|_| DecodeError::TooManyAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(DecodeError::TooManyAttachments);
        }
        rest = &rest[dash + 1..];
    }

    let mut nsp = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                nsp = &rest[..comma];
                rest = &rest[comma + 1..];
            }
            None => {
                nsp = rest;
                rest = "";
            }
        }
    }
    let nsp = nsp.to_owned();

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| DecodeError::InvalidAckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };

    let data = if rest.is_empty() { None } else { Some(rest) };

    match kind {
        b'0' => {
            let auth = match data {
                Some(json) => {
                    let raw = parse_raw(json)?;
                    if !raw.get().starts_with('{') {
                        return Err(DecodeError::InvalidPayload);
                    }
                    Some(raw)
                }
                None => None,
            };
            Ok(Packet::Connect { nsp, auth })
        }
        b'1' => match data {
            None => Ok(Packet::Disconnect { nsp }),
            Some(_) => Err(DecodeError::InvalidPayload),
        },
        b'2' | b'5' => {
            let mut args = parse_array(data.ok_or(DecodeError::InvalidPayload)?)?;
            if args.is_empty() {
                return Err(DecodeError::InvalidPayload);
            }
            let name = args.remove(0);
            let event = event_name(&name)?;
            Ok(Packet::Event {
                nsp,
                id,
                event,
                args,
                attachments,
            })
        }
        b'3' | b'6' => {
            let args = parse_array(data.ok_or(DecodeError::InvalidPayload)?)?;
            let id = id.ok_or(DecodeError::MissingAckId)?;
            Ok(Packet::Ack {
                nsp,
                id,
                args,
                attachments,
            })
        }
        b'4' => {
            let data = parse_raw(data.ok_or(DecodeError::InvalidPayload)?)?;
            if !(data.get().starts_with('{') || data.get().starts_with('"')) {
                return Err(DecodeError::InvalidPayload);
            }
            Ok(Packet::ConnectError { nsp, data })
        }
        _ => Err(DecodeError::UnknownType),
    }
}

fn parse_raw(json: &str) -> Result<Box<RawValue>, DecodeError> {
    serde_json::from_str(json).map_err(|_| DecodeError::InvalidJson)
}

fn parse_array(json: &str) -> Result<Vec<Box<RawValue>>, DecodeError> {
    if !json.starts_with('[') {
        return Err(if serde_json::from_str::<&RawValue>(json).is_ok() {
            DecodeError::InvalidPayload
        } else {
            DecodeError::InvalidJson
        });
    }
    serde_json::from_str(json).map_err(|_| DecodeError::InvalidJson)
}

/// An event name is a string that is not reserved, or a number.
fn event_name(raw: &RawValue) -> Result<String, DecodeError> {
    let text = raw.get();
    if text.starts_with('"') {
        let name: String = serde_json::from_str(text).map_err(|_| DecodeError::InvalidJson)?;
        if RESERVED_EVENTS.contains(&name.as_str()) {
            return Err(DecodeError::ReservedEvent);
        }
        Ok(name)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err(DecodeError::InvalidPayload)
    }
}

/// Appends `s` to `out` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes the common header: type (with attachment count), namespace, ack id.
fn header(kind: u8, attachments: usize, nsp: &str, id: Option<u64>, capacity: usize) -> String {
    // One spare byte: Engine.IO prepends its message type in place.
    let mut out = String::with_capacity(capacity + nsp.len() + 24);
    let binary = attachments > 0;
    out.push(char::from(if binary { kind + 3 } else { kind }));
    if binary {
        out.push_str(&attachments.to_string());
        out.push('-');
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        out.push_str(&id.to_string());
    }
    out
}

fn push_args<'a>(out: &mut String, args: impl IntoIterator<Item = &'a RawValue>) {
    for arg in args {
        out.push(',');
        out.push_str(arg.get());
    }
}

/// Encodes the server's CONNECT answer: `0[nsp,]{"sid":…[,"pid":…]}`,
/// with the private id when the socket can be recovered.
///
/// ```
/// use signalbox::socketio::packet::encode_connect;
/// assert_eq!(encode_connect("/", "abc", None), r#"0{"sid":"abc"}"#);
/// assert_eq!(encode_connect("/x", "a", Some("p")), r#"0/x,{"sid":"a","pid":"p"}"#);
/// ```
pub fn encode_connect(nsp: &str, sid: &str, pid: Option<&str>) -> String {
    let mut out = header(b'0', 0, nsp, None, sid.len() + 40);
    out.push_str("{\"sid\":");
    push_json_str(&mut out, sid);
    if let Some(pid) = pid {
        out.push_str(",\"pid\":");
        push_json_str(&mut out, pid);
    }
    out.push('}');
    out
}

/// Appends `offset` as an event's last argument, as socket.io's connection
/// state recovery numbers events: `2["hi",1]` becomes `2["hi",1,"7"]`.
///
/// ```
/// let mut text = String::from(r#"2["hi",1]"#);
/// signalbox::socketio::packet::append_offset(&mut text, 7);
/// assert_eq!(text, r#"2["hi",1,"7"]"#);
/// ```
pub fn append_offset(text: &mut String, offset: u64) {
    use std::fmt::Write;
    if text.pop() == Some(']') {
        let _ = write!(text, ",\"{offset}\"]");
    }
}

/// Encodes a CONNECT_ERROR: `4[nsp,]{"message":…[,"data":…]}`.
///
/// ```
/// use signalbox::socketio::packet::encode_connect_error;
/// assert_eq!(encode_connect_error("/random", "Invalid namespace", None),
///            r#"4/random,{"message":"Invalid namespace"}"#);
/// ```
pub fn encode_connect_error(nsp: &str, message: &str, data: Option<&RawValue>) -> String {
    let mut out = header(b'4', 0, nsp, None, message.len() + 16);
    out.push_str("{\"message\":");
    push_json_str(&mut out, message);
    if let Some(data) = data {
        out.push_str(",\"data\":");
        out.push_str(data.get());
    }
    out.push('}');
    out
}

/// Encodes a CONNECT answer for a Socket.IO 2 client (protocol 4, on
/// Engine.IO 3): `0[nsp,]`, no payload.
///
/// ```
/// use signalbox::socketio::packet::encode_connect_v4;
/// assert_eq!(encode_connect_v4("/"), "0");
/// assert_eq!(encode_connect_v4("/chat"), "0/chat,");
/// ```
pub fn encode_connect_v4(nsp: &str) -> String {
    header(b'0', 0, nsp, None, 0)
}

/// Encodes a refused CONNECT for a Socket.IO 2 client: an ERROR packet
/// whose payload is the message as a JSON string, `4[nsp,]"message"`.
///
/// ```
/// use signalbox::socketio::packet::encode_connect_error_v4;
/// assert_eq!(encode_connect_error_v4("/", "Invalid namespace"), r#"4"Invalid namespace""#);
/// ```
pub fn encode_connect_error_v4(nsp: &str, message: &str) -> String {
    let mut out = header(b'4', 0, nsp, None, message.len() + 2);
    push_json_str(&mut out, message);
    out
}

/// Encodes a DISCONNECT: `1[nsp,]`.
pub fn encode_disconnect(nsp: &str) -> String {
    header(b'1', 0, nsp, None, 0)
}

/// Encodes an EVENT, or a BINARY_EVENT when `attachments > 0`.
///
/// ```
/// use serde_json::value::RawValue;
/// use signalbox::socketio::packet::encode_event;
/// let one: Box<RawValue> = serde_json::from_str("1").unwrap();
/// assert_eq!(encode_event("/", None, "hi", [&*one], 0), r#"2["hi",1]"#);
/// assert_eq!(encode_event("/a", Some(3), "hi", [], 2), r#"52-/a,3["hi"]"#);
/// ```
pub fn encode_event<'a>(
    nsp: &str,
    id: Option<u64>,
    event: &str,
    args: impl IntoIterator<Item = &'a RawValue> + Clone,
    attachments: usize,
) -> String {
    let size: usize = args.clone().into_iter().map(|a| a.get().len() + 1).sum();
    let mut out = header(b'2', attachments, nsp, id, size + event.len() + 4);
    out.push('[');
    push_json_str(&mut out, event);
    push_args(&mut out, args);
    out.push(']');
    out
}

/// Encodes an EVENT with one argument serialized straight into the packet
/// (no intermediate JSON string).
///
/// ```
/// use signalbox::socketio::packet::encode_event_value;
/// let text = encode_event_value("/", "hi", &serde_json::json!({"a": 1})).unwrap();
/// assert_eq!(text, r#"2["hi",{"a":1}]"#);
/// ```
pub fn encode_event_value<T: serde::Serialize + ?Sized>(
    nsp: &str,
    event: &str,
    arg: &T,
) -> Result<String, serde_json::Error> {
    let mut out = header(b'2', 0, nsp, None, event.len() + 64);
    out.push('[');
    push_json_str(&mut out, event);
    out.push(',');
    let mut bytes = out.into_bytes();
    serde_json::to_writer(&mut bytes, arg)?;
    bytes.push(b']');
    // serde_json writes UTF-8; checking costs one pass, less than a copy.
    String::from_utf8(bytes).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// Encodes an ACK, or a BINARY_ACK when `attachments > 0`.
///
/// ```
/// use serde_json::value::RawValue;
/// use signalbox::socketio::packet::encode_ack;
/// let one: Box<RawValue> = serde_json::from_str("1").unwrap();
/// assert_eq!(encode_ack("/", 456, [&*one, &*one], 0), "3456[1,1]");
/// ```
pub fn encode_ack<'a>(
    nsp: &str,
    id: u64,
    args: impl IntoIterator<Item = &'a RawValue> + Clone,
    attachments: usize,
) -> String {
    let size: usize = args.clone().into_iter().map(|a| a.get().len() + 1).sum();
    let mut out = header(b'3', attachments, nsp, Some(id), size + 2);
    out.push('[');
    let mut first = true;
    for arg in args {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(arg.get());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raws(args: &[Box<RawValue>]) -> Vec<&str> {
        args.iter().map(|a| a.get()).collect()
    }

    #[test]
    fn connect_variants() {
        let cases = [
            ("0", "/", None),
            ("0/custom,", "/custom", None),
            ("0/custom", "/custom", None),
            (r#"0{"token":"123"}"#, "/", Some(r#"{"token":"123"}"#)),
            (
                r#"0/custom,{"token":"abc"}"#,
                "/custom",
                Some(r#"{"token":"abc"}"#),
            ),
            (r#"0{"z":1,"a":2}"#, "/", Some(r#"{"z":1,"a":2}"#)),
        ];
        for (input, want_nsp, want_auth) in cases {
            match decode(input) {
                Ok(Packet::Connect { nsp, auth }) => {
                    assert_eq!(nsp, want_nsp, "{input}");
                    assert_eq!(auth.as_deref().map(RawValue::get), want_auth, "{input}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn what_the_server_encodes_decodes_back() {
        for nsp in ["/", "/custom"] {
            match decode(&encode_connect(nsp, "s\"id", None)) {
                Ok(Packet::Connect { nsp: got, auth }) => {
                    assert_eq!(got, nsp);
                    assert_eq!(
                        auth.as_deref().map(RawValue::get),
                        Some(r#"{"sid":"s\"id"}"#)
                    );
                }
                other => panic!("{nsp}: {other:?}"),
            }
            match decode(&encode_disconnect(nsp)) {
                Ok(Packet::Disconnect { nsp: got }) => assert_eq!(got, nsp),
                other => panic!("{nsp}: {other:?}"),
            }
            let data: Box<RawValue> = serde_json::from_str(r#"{"code":7}"#).unwrap();
            match decode(&encode_connect_error(nsp, "no \"entry\"", Some(&data))) {
                Ok(Packet::ConnectError { nsp: got, data }) => {
                    assert_eq!(got, nsp);
                    assert_eq!(
                        data.get(),
                        r#"{"message":"no \"entry\"","data":{"code":7}}"#
                    );
                }
                other => panic!("{nsp}: {other:?}"),
            }
        }
    }

    #[test]
    fn connect_error_from_a_peer() {
        for (input, want_nsp, want_data) in [
            (r#"4{"message":"nope"}"#, "/", r#"{"message":"nope"}"#),
            (r#"4/admin,"forbidden""#, "/admin", r#""forbidden""#),
        ] {
            match decode(input) {
                Ok(Packet::ConnectError { nsp, data }) => {
                    assert_eq!((nsp.as_str(), data.get()), (want_nsp, want_data), "{input}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn disconnect_variants() {
        for (input, want) in [
            ("1", "/"),
            ("1/custom,", "/custom"),
            ("1/custom", "/custom"),
        ] {
            match decode(input) {
                Ok(Packet::Disconnect { nsp }) => assert_eq!(nsp, want),
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn events_and_acks() {
        let Ok(Packet::Event {
            nsp,
            id,
            event,
            args,
            attachments,
        }) = decode(r#"2["message",1,"2",{"3":[true]}]"#)
        else {
            panic!()
        };
        assert_eq!(
            (nsp.as_str(), id, event.as_str(), attachments),
            ("/", None, "message", 0)
        );
        assert_eq!(raws(&args), ["1", "\"2\"", r#"{"3":[true]}"#]);

        let Ok(Packet::Event { id, args, .. }) = decode(r#"2456["message-with-ack",1]"#) else {
            panic!()
        };
        assert_eq!((id, raws(&args)), (Some(456), vec!["1"]));

        let Ok(Packet::Event { event, .. }) = decode("2[42]") else {
            panic!()
        };
        assert_eq!(event, "42");

        let Ok(Packet::Ack {
            nsp,
            id,
            args,
            attachments,
        }) = decode(r#"3/a,12["x",{}]"#)
        else {
            panic!()
        };
        assert_eq!((nsp.as_str(), id, attachments), ("/a", 12, 0));
        assert_eq!(raws(&args), ["\"x\"", "{}"]);

        let Ok(Packet::Ack { args, .. }) = decode("37[]") else {
            panic!()
        };
        assert!(args.is_empty());
    }

    #[test]
    fn binary_packets() {
        let input = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let Ok(Packet::Event {
            event,
            args,
            attachments,
            ..
        }) = decode(input)
        else {
            panic!()
        };
        assert_eq!((event.as_str(), attachments, args.len()), ("message", 2, 2));
        let reencoded = encode_event("/", None, &event, args.iter().map(|a| &**a), attachments);
        assert_eq!(reencoded, input);

        let input = r#"61-/custom,789[{"_placeholder":true,"num":0}]"#;
        let Ok(Packet::Ack {
            nsp,
            id,
            args,
            attachments,
        }) = decode(input)
        else {
            panic!()
        };
        assert_eq!((nsp.as_str(), id, attachments), ("/custom", 789, 1));
        assert_eq!(
            encode_ack(&nsp, id, args.iter().map(|a| &**a), attachments),
            input
        );

        let Ok(Packet::Event { attachments, .. }) = decode(r#"50-["x"]"#) else {
            panic!()
        };
        assert_eq!(attachments, 0);
    }

    #[test]
    fn encoders_round_trip_through_decoder() {
        let arg: Box<RawValue> = serde_json::from_str(r#"{"a":"\"q\""}"#).unwrap();
        let text = encode_event("/n", Some(9), "we\"ird\n", [&*arg], 0);
        let Ok(Packet::Event {
            nsp,
            id,
            event,
            args,
            ..
        }) = decode(&text)
        else {
            panic!()
        };
        assert_eq!(
            (nsp.as_str(), id, event.as_str()),
            ("/n", Some(9), "we\"ird\n")
        );
        assert_eq!(raws(&args), [arg.get()]);

        assert_eq!(encode_disconnect("/"), "1");
        assert_eq!(encode_disconnect("/x"), "1/x,");
        let data: Box<RawValue> = serde_json::from_str(r#"{"k":1}"#).unwrap();
        assert_eq!(
            encode_connect_error("/", "no", Some(&data)),
            r#"4{"message":"no","data":{"k":1}}"#
        );
        let mut s = String::new();
        push_json_str(&mut s, "\u{1}\t");
        assert_eq!(s, r#""\u0001\t""#);
    }

    #[test]
    fn malformed_input() {
        use DecodeError::*;
        let table: &[(&str, DecodeError)] = &[
            ("", Empty),
            ("7", UnknownType),
            ("a", UnknownType),
            ("\u{e9}", UnknownType),
            ("\u{1f600}[]", UnknownType),
            ("2\u{e9}", InvalidJson),
            ("5\u{e9}-[\"x\"]", IllegalAttachments),
            ("9[]", UnknownType),
            ("4abc", InvalidJson),
            ("2{}", InvalidPayload),
            (r#"2abc["message-with-ack",1]"#, InvalidJson),
            ("2", InvalidPayload),
            ("2[]", InvalidPayload),
            ("2[", InvalidJson),
            ("2[\"x\",]", InvalidJson),
            ("2[true]", InvalidPayload),
            ("2[null]", InvalidPayload),
            ("2[{}]", InvalidPayload),
            (r#"2["connect"]"#, ReservedEvent),
            (r#"2["disconnect",1]"#, ReservedEvent),
            (r#"2["newListener"]"#, ReservedEvent),
            ("2\"x\"", InvalidPayload),
            ("299999999999999999999999[\"x\"]", InvalidAckId),
            ("3[]", MissingAckId),
            ("31{}", InvalidPayload),
            ("0[]", InvalidPayload),
            ("0\"x\"", InvalidPayload),
            ("0{", InvalidJson),
            ("1{}", InvalidPayload),
            ("4", InvalidPayload),
            ("4[]", InvalidPayload),
            ("5[\"x\"]", IllegalAttachments),
            ("5-[\"x\"]", IllegalAttachments),
            ("5a-[\"x\"]", IllegalAttachments),
            ("5+1-[\"x\"]", IllegalAttachments),
            ("51[\"x\"]", IllegalAttachments),
            ("565-[\"x\"]", TooManyAttachments),
            ("599999999999999999999999-[\"x\"]", TooManyAttachments),
            ("6", IllegalAttachments),
            ("61-[]", MissingAckId),
            ("2[\"x\"] trailing", InvalidJson),
        ];
        for (input, error) in table {
            match decode(input) {
                Err(e) => assert_eq!(e, *error, "{input:?}"),
                Ok(p) => panic!("{input:?} decoded as {p:?}"),
            }
        }
    }

    #[test]
    fn deeply_nested_json_is_not_a_crash() {
        let deep = format!("2[\"x\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        // Raw arguments are only scanned; parsing one into a tree stops at
        // serde_json's depth limit with an error.
        let Ok(Packet::Event { args, .. }) = decode(&deep) else {
            panic!()
        };
        assert!(serde_json::from_str::<serde_json::Value>(args[0].get()).is_err());
    }
}
