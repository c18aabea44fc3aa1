//! The properties the fuzz targets (`fuzz/`) and the stable fuzz smoke test
//! (`tests/fuzz_smoke.rs`) check on arbitrary input: no panic, and what
//! decodes re-encodes consistently. Not part of the server.

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::engineio::Data;
use crate::engineio::packet::{Frame, decode_payload, decode_text, encode_payload};
use crate::engineio::payload3;
use crate::http::body::Chunked;
use crate::signaling::hub::Hub;
use crate::signaling::limits::Limits;
use crate::signaling::protocol::{CLIENT_EVENTS, ClientEvent};
use crate::socketio::assemble;
use crate::socketio::packet::{Packet, decode, encode_ack, encode_event};

/// Request heads: parsing never panics, and what parses answers its
/// questions without panicking either.
pub fn http_head(data: &[u8]) {
    if let Ok(Some((request, len))) = crate::http::parse_head(data) {
        assert!(len <= data.len());
        let _ = request.keep_alive();
        let _ = request.body_length();
        let _ = request.is_websocket_upgrade();
        let _ = crate::http::query_param(&request.query, "sid");
    }
}

/// Chunked bodies: fed whole or in two pieces split at the first byte's
/// value, the outcome is the same and within the limit.
pub fn chunked_body(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut whole = Chunked::new(4096);
    let whole_used = whole.feed(input);
    let cut = usize::from(split).min(input.len());
    let mut pieces = Chunked::new(4096);
    let pieces_used = pieces.feed(&input[..cut]).and_then(|used| {
        if used == cut && !pieces.is_done() {
            pieces.feed(&input[cut..]).map(|more| used + more)
        } else {
            Ok(used)
        }
    });
    if let (Ok(a), Ok(b)) = (whole_used, pieces_used)
        && whole.is_done()
        && pieces.is_done()
    {
        assert_eq!(a, b);
        let body = whole.into_body();
        assert!(body.len() <= 4096);
        assert_eq!(body, pieces.into_body());
    }
}

/// Engine.IO packets and polling payloads, of protocol 4 and 3 (see
/// [`engineio3_payload`]): decoding never panics; a decoded packet or
/// payload encodes to one that decodes the same.
pub fn engineio_packet(data: &[u8]) {
    engineio3_payload(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(packet) = decode_text(text)
        && let Frame::Text(frame) = packet.clone().into_frame()
    {
        assert_eq!(decode_text(&frame), Ok(packet));
    }
    if let Ok(packets) = decode_payload(text) {
        assert_eq!(decode_payload(&encode_payload(&packets)), Ok(packets));
    }
}

/// Engine.IO 3 polling payloads (`--allow-eio3`), text and binary forms:
/// decoding never panics; a decoded payload encodes, in either form, to one
/// that decodes the same.
pub fn engineio3_payload(data: &[u8]) {
    let Ok(packets) = payload3::decode(data) else {
        return;
    };
    for binary in [false, true] {
        let encoded = match payload3::encode(&packets, binary) {
            payload3::Body::Text(text) => text.into_bytes(),
            payload3::Body::Binary(bytes) => bytes,
        };
        assert_eq!(payload3::decode(&encoded), Ok(packets.clone()));
    }
}

/// Socket.IO packets and their binary attachments, as a session receives
/// them: the input is Engine.IO messages, the first a text one, each next
/// one after a separator, `0xfe` for text or `0xff` for binary (neither
/// is ever part of UTF-8). They go through the server's own reassembly,
/// with a small attachment limit. Nothing panics; a complete packet has
/// the attachments it announced, within the limit; decoded events and acks
/// re-encode to packets that decode.
pub fn socketio_packet(data: &[u8]) {
    const MAX_ATTACHMENT_BYTES: usize = 64;
    let mut partial = None;
    let mut rest = data;
    let mut text = true;
    loop {
        let end = rest
            .iter()
            .position(|b| matches!(b, 0xfe | 0xff))
            .unwrap_or(rest.len());
        let message = if text {
            let Ok(text) = std::str::from_utf8(&rest[..end]) else {
                return;
            };
            reencodes(text);
            Data::Text(text.to_owned())
        } else {
            Data::Binary(rest[..end].to_vec())
        };
        match assemble(&mut partial, message, MAX_ATTACHMENT_BYTES) {
            Ok(Some((packet, attachments))) => {
                let announced = match packet {
                    Packet::Event { attachments, .. } | Packet::Ack { attachments, .. } => {
                        attachments
                    }
                    _ => 0,
                };
                assert_eq!(attachments.len(), announced);
                assert!(attachments.iter().map(Vec::len).sum::<usize>() <= MAX_ATTACHMENT_BYTES);
            }
            Ok(None) => {}
            // The server closes the session.
            Err(_) => return,
        }
        let Some(&separator) = rest.get(end) else {
            return;
        };
        text = separator == 0xfe;
        rest = &rest[end + 1..];
    }
}

/// Decoded events and acks re-encode to packets that decode.
fn reencodes(text: &str) {
    let again = match decode(text) {
        Ok(Packet::Event {
            nsp,
            id,
            event,
            args,
            attachments,
        }) => encode_event(&nsp, id, &event, args.iter().map(|a| &**a), attachments),
        Ok(Packet::Ack {
            nsp,
            id,
            args,
            attachments,
        }) => encode_ack(&nsp, id, args.iter().map(|a| &**a), attachments),
        _ => return,
    };
    assert!(decode(&again).is_ok(), "{again}");
}

/// Signaling payloads: the first byte picks the event, the rest is its
/// JSON; it is parsed or refused, and what parses drives a hub, never a
/// panic.
pub fn signaling_event(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(json) else {
        return;
    };
    let name = CLIENT_EVENTS[usize::from(which) % CLIENT_EVENTS.len()];
    let limits = Limits::default();
    let Ok(Some(event)) = ClientEvent::parse(name, Some(&raw), &limits) else {
        return;
    };
    let mut hub: Hub<u8> = Hub::new(Duration::from_secs(30), &limits, false);
    let now = Instant::now();
    for (socket, user) in [(1, "fuzz"), (2, "peer")] {
        let json = format!(r#"{{"userId":"{user}"}}"#);
        if let Ok(raw) = RawValue::from_string(json)
            && let Ok(Some(register)) = ClientEvent::parse("register_user", Some(&raw), &limits)
        {
            let _ = hub.handle(&socket, register, now);
        }
    }
    let _ = hub.handle(&1, event, now);
    let _ = hub.expire(now + Duration::from_secs(60));
    let _ = hub.disconnected(&1, now);
}
