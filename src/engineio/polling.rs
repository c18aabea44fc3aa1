//! The HTTP long-polling transport: GET collects queued packets, POST
//! delivers the client's.

use futures_lite::{AsyncRead, AsyncWrite, future};

use super::packet::{Packet, SEPARATOR, decode_text, encode_payload};
use super::session::{Phase, Upgrade};
use super::{CloseReason, Engine, RequestError, Session, Transport, Unjoined};
use crate::http::conn::ReadError;
use crate::http::{Conn, Request, Response};
use std::net::IpAddr;

fn payload_response(body: String) -> Response {
    Response::text(200, body).header("Cache-Control", "no-store")
}

/// Opens a session in `place`; the answer carries the open packet.
pub(crate) fn handshake(engine: &Engine, address: IpAddr, place: Unjoined) -> Response {
    let session = engine.open(Transport::Polling, address, Some(place));
    let response = collect(&session);
    engine.0.sent(response.body.len());
    response
}

/// A long-polling GET: waits for packets, or for the session to end or
/// upgrade, and answers with them.
pub(crate) async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    session: &Session,
    conn: &mut Conn<S>,
) -> Option<Response> {
    {
        let mut st = session.borrow_mut();
        if st.polling_get {
            // Two GETs at once break ordering: the protocol says to end the
            // session; the waiting GET answers with a close packet.
            drop(st);
            session.terminate(CloseReason::TransportError);
            return Some(RequestError::BadRequest.response());
        }
        st.polling_get = true;
    }
    let ready = session.wait(|st| {
        !st.outbox.is_empty()
            || st.phase != Phase::Open
            || st.upgrade == Upgrade::Probed
            || st.transport != Transport::Polling
    });
    let gone = future::or(
        async {
            ready.await;
            false
        },
        async {
            conn.closed().await;
            true
        },
    )
    .await;
    session.borrow_mut().polling_get = false;
    if gone {
        session.terminate(CloseReason::TransportClose);
        return None;
    }
    let response = collect(session);
    engine.0.sent(response.body.len());
    Some(response)
}

/// Builds a GET answer from the session's state, emptying its queue.
fn collect(session: &Session) -> Response {
    let phase = {
        let st = session.borrow();
        match (st.transport, st.phase) {
            // Upgraded while this GET waited: release it.
            (Transport::WebSocket, _) => return payload_response("6".into()),
            // The client closed the session itself: a noop ends its GET.
            (_, Phase::Closed) if st.reason == Some(CloseReason::TransportClose) => {
                return payload_response("6".into());
            }
            (_, phase) => phase,
        }
    };
    let mut packets = session.drain();
    match phase {
        Phase::Open if packets.is_empty() => packets.push(Packet::Noop),
        Phase::Open => {}
        // Closed by the server: the last packets go out first, and the close
        // packet with the next GET. In one body, socket.io-client would act
        // on the close before the packets, as it handles them a tick later.
        Phase::Closing if !packets.is_empty() => {}
        Phase::Closing => {
            packets.push(Packet::Close);
            session.finish();
        }
        Phase::Closed => packets.push(Packet::Close),
    }
    payload_response(encode_payload(&packets))
}

/// A long-polling POST: reads the body and hands its packets to the session.
pub(crate) async fn post<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    session: &Session,
    request: &Request,
    conn: &mut Conn<S>,
) -> Option<Response> {
    {
        let mut st = session.borrow_mut();
        if st.polling_post {
            drop(st);
            session.terminate(CloseReason::TransportError);
            return Some(RequestError::BadRequest.response());
        }
        st.polling_post = true;
    }
    let body = conn.read_body(request, engine.config().max_payload).await;
    session.borrow_mut().polling_post = false;
    let body = match body {
        Ok(body) => body,
        Err(ReadError::BodyTooLarge) => return Some(Response::error(413).closing()),
        Err(error) => {
            session.terminate(CloseReason::TransportError);
            return error.status().map(|s| Response::error(s).closing());
        }
    };
    engine.0.received(body.len());
    let Ok(text) = String::from_utf8(body) else {
        session.terminate(CloseReason::ParseError);
        return Some(RequestError::BadRequest.response());
    };
    // Packet by packet, each charged to the connection's turn: a body may
    // hold a hundred thousand of them.
    for packet in text.split(SEPARATOR) {
        match decode_text(packet) {
            Ok(packet) => session.receive(packet),
            Err(_) => {
                session.terminate(CloseReason::ParseError);
                return Some(RequestError::BadRequest.response());
            }
        }
        conn.spend(1).await;
    }
    Some(
        Response::new(200)
            .header("Content-Type", "text/html")
            .body(b"ok".to_vec()),
    )
}
