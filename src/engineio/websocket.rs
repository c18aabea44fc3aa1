//! The WebSocket transport: a session of its own, or the upgrade of a
//! long-polling session (`2probe`, `3probe`, `5`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::{AsyncRead, AsyncWrite, StreamExt, future};
use smol::Timer;

use super::packet::{Data, Frame, Packet, decode_text};
use super::session::{Phase, Upgrade};
use super::{CloseReason, Engine, Session, Transport};

/// How long a closing handshake may take before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    mut ws: WebSocketStream<S>,
    sid: Option<Rc<str>>,
) {
    let session = match sid {
        None => engine.open(Transport::WebSocket),
        Some(sid) => {
            let Some(session) = engine.session(&sid) else {
                close(&mut ws).await;
                return;
            };
            let claimed = {
                let mut st = session.borrow_mut();
                let upgradable = st.transport == Transport::Polling
                    && st.upgrade == Upgrade::None
                    && st.phase == Phase::Open;
                if upgradable {
                    st.upgrade = Upgrade::Probing;
                }
                upgradable
            };
            if !claimed {
                close(&mut ws).await;
                return;
            }
            if !probe(engine, &session, &mut ws).await {
                session.borrow_mut().upgrade = Upgrade::None;
                session.notify();
                close(&mut ws).await;
                return;
            }
            session
        }
    };
    serve(engine, &session, ws).await;
}

/// Runs the upgrade handshake; true once the session is on this WebSocket.
async fn probe<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    session: &Session,
    ws: &mut WebSocketStream<S>,
) -> bool {
    let deadline = Instant::now() + engine.config().upgrade_timeout;
    loop {
        let next = future::or(async { Some(ws.next().await) }, async {
            let closed = session.wait(|st| st.phase != Phase::Open);
            future::or(closed, async {
                Timer::at(deadline).await;
            })
            .await;
            None
        })
        .await;
        let Some(Some(Ok(message))) = next else {
            return false;
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => return false,
        };
        let upgrade = session.borrow().upgrade;
        match decode_text(text.as_str()) {
            Ok(Packet::Ping(data)) if data == "probe" && upgrade == Upgrade::Probing => {
                let answered = future::or(
                    async { send(ws, Packet::Pong("probe".into())).await.is_ok() },
                    async {
                        Timer::at(deadline).await;
                        false
                    },
                );
                if !answered.await {
                    return false;
                }
                session.borrow_mut().upgrade = Upgrade::Probed;
                // Releases a waiting GET with a noop, so the client can pause polling.
                session.notify();
            }
            Ok(Packet::Upgrade) if upgrade == Upgrade::Probed => {
                let mut st = session.borrow_mut();
                if st.phase != Phase::Open {
                    return false;
                }
                st.transport = Transport::WebSocket;
                st.upgrade = Upgrade::None;
                drop(st);
                session.notify();
                return true;
            }
            _ => return false,
        }
    }
}

/// Moves packets both ways until the session or the socket ends.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    session: &Session,
    mut ws: WebSocketStream<S>,
) {
    loop {
        while let Some(packet) = session.pop() {
            engine.0.sent(packet.queued_size());
            let sent = future::or(async { Some(send(&mut ws, packet).await) }, async {
                // A client that stops reading must not keep the task alive
                // after its session ended.
                session.wait(|st| st.phase == Phase::Closed).await;
                None
            })
            .await;
            match sent {
                Some(Ok(())) => {}
                Some(Err(_)) => return session.terminate(CloseReason::TransportError),
                None => return,
            }
        }
        let phase = session.borrow().phase;
        match phase {
            Phase::Open => {}
            Phase::Closing => {
                close(&mut ws).await;
                return session.finish();
            }
            Phase::Closed => return close(&mut ws).await,
        }

        let event = future::or(async { Some(ws.next().await) }, async {
            session
                .wait(|st| !st.outbox.is_empty() || st.phase != Phase::Open)
                .await;
            None
        })
        .await;
        let message = match event {
            None => continue,
            Some(None) => return session.terminate(CloseReason::TransportClose),
            Some(Some(Err(_))) => return session.terminate(CloseReason::TransportError),
            Some(Some(Ok(message))) => message,
        };
        if let Message::Text(_) | Message::Binary(_) = &message {
            engine.0.received(message.len());
        }
        match message {
            Message::Text(text) => match decode_text(text.as_str()) {
                Ok(packet) => session.receive(packet),
                Err(_) => session.terminate(CloseReason::ParseError),
            },
            Message::Binary(bytes) => session.receive(Packet::Message(Data::Binary(bytes.into()))),
            Message::Close(_) => return session.terminate(CloseReason::TransportClose),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    packet: Packet,
) -> Result<(), WsError> {
    let message = match packet.into_frame() {
        Frame::Text(text) => Message::Text(text.into()),
        Frame::Binary(bytes) => Message::Binary(bytes.into()),
    };
    ws.send(message).await
}

/// Runs the closing handshake within a short grace period: sends a close
/// frame, then reads until the peer's answer. Dropping the socket with the
/// answer unread would reset the connection, which clients report as an
/// error rather than a close.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    future::or(
        async {
            if ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        },
        async {
            Timer::after(CLOSE_GRACE).await;
        },
    )
    .await;
}
