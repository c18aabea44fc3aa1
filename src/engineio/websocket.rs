//! The WebSocket transport: a session of its own, or the upgrade of a
//! long-polling session (`2probe`, `3probe`, `5`).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::{AsyncRead, AsyncWrite, Stream, StreamExt, future};
use futures_sink::Sink;
use smol::Timer;

use super::packet::{Data, Frame, Packet, decode_text};
use super::session::{Phase, Upgrade};
use super::{CloseReason, Engine, Session, Transport};

/// How long a closing handshake may take before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves an accepted WebSocket: a new session at once, or first the
/// upgrade of the polling session `sid`. Written as a small enum future
/// rather than an `async fn`, whose state would keep room for every phase
/// for the socket's whole life.
pub(crate) fn run<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    engine: &Engine,
    ws: WebSocketStream<S>,
    sid: Option<Rc<str>>,
) -> Served<S> {
    let Some(sid) = sid else {
        let session = engine.open(Transport::WebSocket);
        return Served::Serving(Serve::new(engine, session, ws));
    };
    let engine = engine.clone();
    Served::Starting(Box::pin(async move {
        let mut ws = ws;
        let session = engine.session(&sid).filter(|session| {
            let mut st = session.borrow_mut();
            let upgradable = st.transport == Transport::Polling
                && st.upgrade == Upgrade::None
                && st.phase == Phase::Open;
            if upgradable {
                st.upgrade = Upgrade::Probing;
            }
            upgradable
        });
        let Some(session) = session else {
            close(&mut ws).await;
            return None;
        };
        if !probe(&engine, &session, &mut ws).await {
            session.borrow_mut().upgrade = Upgrade::None;
            session.notify();
            close(&mut ws).await;
            return None;
        }
        Some(Serve::new(&engine, session, ws))
    }))
}

/// A WebSocket's life: the upgrade handshake (boxed: short and rare), then
/// serving.
// Serving is the state a socket lives in; boxing it would add an
// allocation per socket to save bytes only during the upgrade.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Served<S> {
    Starting(Pin<Box<dyn Future<Output = Option<Serve<S>>>>>),
    Serving(Serve<S>),
    Done,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Future for Served<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Served::Starting(start) => match start.as_mut().poll(cx) {
                    Poll::Ready(Some(serve)) => *this = Served::Serving(serve),
                    Poll::Ready(None) => *this = Served::Done,
                    Poll::Pending => return Poll::Pending,
                },
                Served::Serving(serve) => return Pin::new(serve).poll(cx),
                Served::Done => return Poll::Ready(()),
            }
        }
    }
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

/// Moves packets both ways until the session or the socket ends. A future
/// written by hand: what it keeps for the socket's whole life is the socket,
/// one frame in flight and a flag, where an `async fn` loop kept a copy of
/// every branch's state (2 KiB per client).
pub(crate) struct Serve<S> {
    engine: Engine,
    session: Session,
    ws: Option<WebSocketStream<S>>,
    /// A frame the socket was not ready to take yet.
    outgoing: Option<Message>,
    /// Frames were handed to the socket and not flushed yet.
    unflushed: bool,
    /// The closing handshake, once the session ended.
    closing: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Serve<S> {
    fn new(engine: &Engine, session: Session, ws: WebSocketStream<S>) -> Serve<S> {
        Serve {
            engine: engine.clone(),
            session,
            ws: Some(ws),
            outgoing: None,
            unflushed: false,
            closing: None,
        }
    }

    /// Hands the socket to a closing handshake; `finish` forgets a session
    /// the server closed once its last packets went out.
    fn close(&mut self, finish: bool) {
        let session = self.session.clone();
        if let Some(mut ws) = self.ws.take() {
            self.closing = Some(Box::pin(async move {
                close(&mut ws).await;
                if finish {
                    session.finish();
                }
            }));
        }
    }

    /// Hands queued packets to the socket and flushes them. False when the
    /// socket failed.
    fn write(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(ws) = self.ws.as_mut() else {
            return false;
        };
        loop {
            if self.outgoing.is_none() {
                let Some(packet) = self.session.pop() else {
                    break;
                };
                self.engine.0.sent(packet.queued_size());
                self.outgoing = Some(message_of(packet));
            }
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(message) = self.outgoing.take() else {
                        break;
                    };
                    if Pin::new(&mut *ws).start_send(message).is_err() {
                        return false;
                    }
                    self.unflushed = true;
                }
                Poll::Ready(Err(_)) => return false,
                Poll::Pending => return true,
            }
        }
        if self.unflushed {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return false,
                Poll::Pending => {}
            }
        }
        true
    }

    /// Handles one message from the client.
    fn read(&mut self, message: Message) {
        if let Message::Text(_) | Message::Binary(_) = &message {
            self.engine.0.received(message.len());
        }
        match message {
            Message::Text(text) => match decode_text(text.as_str()) {
                Ok(packet) => self.session.receive(packet),
                Err(_) => self.session.terminate(CloseReason::ParseError),
            },
            Message::Binary(bytes) => self
                .session
                .receive(Packet::Message(Data::Binary(bytes.into()))),
            Message::Close(_) => self.session.terminate(CloseReason::TransportClose),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Future for Serve<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Some(closing) = this.closing.as_mut() {
                return closing.as_mut().poll(cx);
            }
            if !this.write(cx) {
                this.session.terminate(CloseReason::TransportError);
            }
            let (phase, drained) = {
                let st = this.session.borrow();
                (st.phase, st.outbox.is_empty())
            };
            match phase {
                Phase::Closed => {
                    this.close(false);
                    continue;
                }
                Phase::Closing if drained && this.outgoing.is_none() && !this.unflushed => {
                    this.close(true);
                    continue;
                }
                _ => {}
            }
            let Some(ws) = this.ws.as_mut() else {
                return Poll::Ready(());
            };
            match Pin::new(ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    this.read(message);
                    continue;
                }
                Poll::Ready(Some(Err(_))) => {
                    this.session.terminate(CloseReason::TransportError);
                    continue;
                }
                Poll::Ready(None) => {
                    this.session.terminate(CloseReason::TransportClose);
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            // Packets queued meanwhile (by the handler of what was just read)
            // go out before sleeping.
            if this.outgoing.is_none() && !this.session.borrow().outbox.is_empty() {
                continue;
            }
            this.session.register(cx.waker());
            return Poll::Pending;
        }
    }
}

fn message_of(packet: Packet) -> Message {
    match packet.into_frame() {
        Frame::Text(text) => Message::Text(text.into()),
        Frame::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    packet: Packet,
) -> Result<(), WsError> {
    ws.send(message_of(packet)).await
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
