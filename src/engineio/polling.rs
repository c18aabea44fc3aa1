//! The HTTP long-polling transport, a thin driver of the session: a GET
//! waits until the session has something to answer and collects it, a POST
//! hands the client's packets to it.

use std::net::IpAddr;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite, future};

use super::packet::{Packet, SEPARATOR, decode_text, encode_payload};
use super::payload3::{self, Body};
use super::{
    CloseReason, Engine, Protocol, RequestError, Session, SessionRef, Transport, Unjoined,
};
use crate::http::conn::ReadError;
use crate::http::{Conn, Request, Response, query_param};

/// The answer to a GET: `packets` as `protocol` frames them; an Engine.IO 3
/// client that asked for `b64=1` takes no binary body.
fn payload_response(
    engine: &Engine,
    protocol: Protocol,
    request: &Request,
    packets: &[Packet],
) -> Response {
    let body = match protocol {
        Protocol::V4 => Body::Text(encode_payload(packets)),
        Protocol::V3 => payload3::encode(packets, query_param(&request.query, "b64").is_none()),
    };
    let response = match body {
        Body::Text(body) => {
            engine.0.sent(body.len());
            Response::text(200, body)
        }
        Body::Binary(body) => {
            engine.0.sent(body.len());
            Response::new(200)
                .header("Content-Type", "application/octet-stream")
                .body(body)
        }
    };
    response.header("Cache-Control", "no-store")
}

/// Opens a session in `place`; the answer carries the open packet.
pub(crate) fn handshake(
    engine: &Engine,
    protocol: Protocol,
    request: &Request,
    address: IpAddr,
    place: Unjoined,
) -> Response {
    let query = &request.query;
    let session = engine.open(protocol, Transport::Polling, address, Some(place), query);
    let packets = session.with(|s| s.collect());
    payload_response(engine, protocol, request, &packets)
}

/// A long-polling GET: waits for packets, for the session to end or to
/// upgrade, and answers with them.
pub(crate) async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    session: &SessionRef,
    request: &Request,
    conn: &mut Conn<S>,
) -> Option<Response> {
    if let Err(error) = session.with(|s| s.begin_get()) {
        return Some(error.response());
    }
    let gone = future::or(
        async {
            session.wait(|s| s.get_ready()).await;
            false
        },
        async {
            conn.closed().await;
            true
        },
    )
    .await;
    session.with(|s| s.end_get(gone));
    if gone {
        return None;
    }
    let packets = session.with(|s| s.collect());
    let protocol = session.read(Session::protocol);
    Some(payload_response(engine, protocol, request, &packets))
}

/// A long-polling POST: reads the body and hands its packets to the session.
pub(crate) async fn post<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    session: &SessionRef,
    request: &Request,
    conn: &mut Conn<S>,
) -> Option<Response> {
    if let Err(error) = session.with(|s| s.begin_post()) {
        return Some(error.response());
    }
    let body = conn.read_body(request, engine.config().max_payload).await;
    session.with(|s| s.end_post());
    let body = match body {
        Ok(body) => body,
        Err(ReadError::BodyTooLarge) => return Some(Response::error(413).closing()),
        Err(error) => {
            session.terminate(CloseReason::TransportError);
            return error.status().map(|s| Response::error(s).closing());
        }
    };
    engine.0.received(body.len());
    if session.read(Session::protocol) == Protocol::V3 {
        let Ok(packets) = payload3::decode(&body) else {
            session.terminate(CloseReason::ParseError);
            return Some(RequestError::BadRequest.response());
        };
        for packet in packets {
            session.with(|s| s.handle_packet(packet, Instant::now()));
            conn.spend(1).await;
        }
        return Some(ok());
    }
    let Ok(text) = String::from_utf8(body) else {
        session.terminate(CloseReason::ParseError);
        return Some(RequestError::BadRequest.response());
    };
    // Packet by packet, each charged to the connection's turn: a body may
    // hold a hundred thousand of them.
    for packet in text.split(SEPARATOR) {
        match decode_text(packet) {
            Ok(packet) => session.with(|s| s.handle_packet(packet, Instant::now())),
            Err(_) => {
                session.terminate(CloseReason::ParseError);
                return Some(RequestError::BadRequest.response());
            }
        }
        conn.spend(1).await;
    }
    Some(ok())
}

fn ok() -> Response {
    Response::new(200)
        .header("Content-Type", "text/html")
        .body(b"ok".to_vec())
}
