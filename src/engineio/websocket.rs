//! The WebSocket transport: a session of its own, or the upgrade of a
//! long-polling session (`2probe`, `3probe`, `5`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::{AsyncRead, AsyncWrite, Stream, StreamExt, future};
use futures_sink::Sink;
use smol::Timer;

use super::frames::Frames;
use super::packet::{Data, Frame, Packet, decode_text};
use super::session::{Phase, Protocol, Session, Upgrade, UpgradeStep};
use super::{Admission, CloseReason, Engine, SessionRef, Transport};
use crate::rt::Turn;

/// How long a closing handshake may take before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A frame above this size grows tungstenite's buffers: the socket starts
/// afresh once it is through, to give the memory back.
const LARGE_FRAME: u64 = 4096;

/// A WebSocket over `stream`, whose first bytes, `read`, were read with the
/// request. (No handshake happens here: the future is ready at once.)
fn websocket<S: AsyncRead + AsyncWrite + Unpin>(
    stream: Frames<S>,
    read: Vec<u8>,
    config: WebSocketConfig,
) -> WebSocketStream<Frames<S>> {
    future::block_on(WebSocketStream::from_partially_read(
        stream,
        read,
        Role::Server,
        Some(config),
    ))
}

/// Serves an accepted WebSocket over `stream`, whose first bytes, `read`,
/// came with the request: a new session at once, or first the upgrade of
/// the polling session `sid`. Written as a small enum future rather than an
/// `async fn`, whose state would keep room for every phase for the
/// socket's whole life.
pub(crate) fn run<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    engine: &Engine,
    stream: S,
    read: Vec<u8>,
    admission: Admission,
) -> Served<S> {
    let frames = Frames::new(stream, &read);
    let ws = websocket(frames, read, engine.config().websocket());
    let Some(sid) = admission.sid else {
        let (protocol, address) = (admission.protocol, admission.address);
        let (place, query) = (admission.place, &admission.query);
        let session = engine.open(protocol, Transport::WebSocket, address, place, query);
        return Served::Serving(Serve::new(engine, session, ws));
    };
    let engine = engine.clone();
    Served::Starting(Box::pin(async move {
        let mut ws = ws;
        let session = engine
            .session(&sid)
            .filter(|session| session.with(|s| s.begin_upgrade(Instant::now())).is_ok());
        let Some(session) = session else {
            close(&mut ws, None).await;
            return None;
        };
        if !probe(&session, &mut ws).await {
            session.with(|s| s.abandon_upgrade());
            close(&mut ws, None).await;
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

/// Runs the upgrade handshake, each packet a step of the session's; true
/// once the session is on this WebSocket. The session gives the upgrade up
/// at its timeout, or when it ends, which ends the wait here.
async fn probe<S: AsyncRead + AsyncWrite + Unpin>(
    session: &SessionRef,
    ws: &mut WebSocketStream<Frames<S>>,
) -> bool {
    let given_up = || session.wait(|s| s.upgrade() == Upgrade::None);
    let mut turn = Turn::new();
    loop {
        let next = future::or(async { Some(ws.next().await) }, async {
            given_up().await;
            None
        })
        .await;
        let Some(Some(Ok(message))) = next else {
            return false;
        };
        turn.take(1, message.len()).await;
        let text = match message {
            Message::Text(text) => text,
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => return false,
        };
        let Ok(packet) = decode_text(text.as_str()) else {
            return false;
        };
        match session.with(|s| s.handle_upgrade_packet(packet)) {
            Ok(UpgradeStep::Reply(reply)) => {
                let answered = future::or(async { send(ws, reply).await.is_ok() }, async {
                    given_up().await;
                    false
                });
                if !answered.await {
                    return false;
                }
            }
            Ok(UpgradeStep::Upgraded) => return true,
            Err(_) => return false,
        }
    }
}

/// Moves packets both ways until the session or the socket ends. A future
/// written by hand: what it keeps for the socket's whole life is the socket,
/// one frame in flight and a flag, where an `async fn` loop kept a copy of
/// every branch's state (2 KiB per client).
pub(crate) struct Serve<S> {
    engine: Engine,
    session: SessionRef,
    ws: Option<WebSocketStream<Frames<S>>>,
    /// A frame the socket was not ready to take yet.
    outgoing: Option<Message>,
    /// Frames were handed to the socket and not flushed yet.
    unflushed: bool,
    /// The closing handshake, once the session ended.
    closing: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// Messages read and written since the socket last let others run.
    turn: Turn,
    /// Messages tungstenite gave us: when the stream saw as many end, it
    /// holds no unread byte.
    received: u64,
    /// A large frame went out since the socket last started afresh.
    sent_large: bool,
    /// A message was larger than `maxPayload`: the close says so (1009),
    /// not the usual 1000. (A flag, not the frame: every socket carries it.)
    too_big: bool,
    /// The session's protocol: Engine.IO 3 binary frames carry a type byte.
    protocol: Protocol,
    /// How many times the socket started afresh.
    #[cfg(test)]
    fresh_starts: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Serve<S> {
    fn new(engine: &Engine, session: SessionRef, ws: WebSocketStream<Frames<S>>) -> Serve<S> {
        let received = ws.get_ref().ends();
        let protocol = session.read(Session::protocol);
        Serve {
            engine: engine.clone(),
            protocol,
            session,
            ws: Some(ws),
            outgoing: None,
            unflushed: false,
            closing: None,
            turn: Turn::new(),
            received,
            sent_large: false,
            too_big: false,
            #[cfg(test)]
            fresh_starts: 0,
        }
    }

    /// Hands the socket to a closing handshake; `finish` forgets a session
    /// the server closed once its last packets went out.
    fn close(&mut self, finish: bool) {
        let session = self.session.clone();
        let frame = self.too_big.then(|| CloseFrame {
            code: CloseCode::Size,
            reason: "message larger than maxPayload".into(),
        });
        if let Some(mut ws) = self.ws.take() {
            self.closing = Some(Box::pin(async move {
                close(&mut ws, frame).await;
                if finish {
                    session.with(|s| s.delivered());
                }
            }));
        }
    }

    /// Starts a fresh WebSocket over the same stream after a large frame
    /// either way, once tungstenite holds nothing: its buffers stay as big
    /// as the largest frame otherwise.
    fn start_afresh_if_grown(&mut self) {
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        let frames = ws.get_mut();
        let idle = frames.at_boundary()
            && frames.ends() == self.received
            && self.outgoing.is_none()
            && !self.unflushed;
        if !idle {
            return;
        }
        let grown = frames.forget_largest() > LARGE_FRAME;
        if !grown && !std::mem::take(&mut self.sent_large) {
            return;
        }
        self.sent_large = false;
        if let Some(ws) = self.ws.take() {
            let config = *ws.get_config();
            self.ws = Some(websocket(ws.into_inner(), Vec::new(), config));
            #[cfg(test)]
            {
                self.fresh_starts += 1;
            }
        }
    }

    /// Hands queued packets to the socket and flushes them, until the turn
    /// is used up (the task is woken again then).
    fn write(&mut self, cx: &mut Context<'_>) -> Written {
        let Some(ws) = self.ws.as_mut() else {
            return Written::Failed;
        };
        let mut written = Written::All;
        loop {
            if self.outgoing.is_none() {
                if self.session.read(|s| s.outbox_is_empty()) {
                    break;
                }
                if self.turn.poll_take(cx, 1, 0).is_pending() {
                    written = Written::TurnOver;
                    break;
                }
                let Some(packet) = self.session.with(|s| s.poll_transmit()) else {
                    break;
                };
                let size = packet.queued_size();
                self.engine.0.sent(size);
                self.sent_large |= size as u64 > LARGE_FRAME;
                self.outgoing = Some(message_of(packet, self.protocol));
            }
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let Some(message) = self.outgoing.take() else {
                        break;
                    };
                    if Pin::new(&mut *ws).start_send(message).is_err() {
                        return Written::Failed;
                    }
                    self.unflushed = true;
                }
                Poll::Ready(Err(_)) => return Written::Failed,
                Poll::Pending => return Written::All,
            }
        }
        if self.unflushed {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Written::Failed,
                Poll::Pending => {}
            }
        }
        written
    }

    /// Handles one message from the client.
    fn read(&mut self, message: Message) {
        if let Message::Text(_) | Message::Binary(_) = &message {
            self.engine.0.received(message.len());
        }
        let now = Instant::now();
        match message {
            Message::Text(text) => match decode_text(text.as_str()) {
                Ok(packet) => self.session.with(|s| s.handle_packet(packet, now)),
                Err(_) => self.session.terminate(CloseReason::ParseError),
            },
            Message::Binary(bytes) => {
                let mut bytes: Vec<u8> = bytes.into();
                // Engine.IO 3: the message type first (4), then the data.
                if self.protocol == Protocol::V3 && bytes.first() != Some(&4) {
                    self.session.terminate(CloseReason::ParseError);
                    return;
                }
                if self.protocol == Protocol::V3 {
                    bytes.remove(0);
                }
                let packet = Packet::Message(Data::Binary(bytes));
                self.session.with(|s| s.handle_packet(packet, now))
            }
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
            match this.write(cx) {
                Written::All => this.start_afresh_if_grown(),
                // Woken again already; the rest goes out on the next turn.
                Written::TurnOver => return Poll::Pending,
                Written::Failed => this.session.terminate(CloseReason::TransportError),
            }
            let (phase, drained) = this.session.read(|s| (s.phase(), s.outbox_is_empty()));
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
                    this.received += 1;
                    // Pings, pongs and noops are work like any event.
                    let size = message.len();
                    this.read(message);
                    if this.turn.poll_take(cx, 1, size).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
                Poll::Ready(Some(Err(error))) => {
                    if let WsError::Capacity(_) = error {
                        this.too_big = true;
                    }
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
            if this.outgoing.is_none() && !this.session.read(|s| s.outbox_is_empty()) {
                continue;
            }
            this.session.register(cx.waker());
            return Poll::Pending;
        }
    }
}

/// How far [`Serve::write`] got.
enum Written {
    /// Everything queued was handed to the socket (or it takes no more now,
    /// and wakes the task when it does).
    All,
    /// The turn was used up first.
    TurnOver,
    /// Sending or flushing failed, or the socket is gone: a transport error.
    Failed,
}

fn message_of(packet: Packet, protocol: Protocol) -> Message {
    match packet.into_frame() {
        Frame::Text(text) => Message::Text(text.into()),
        Frame::Binary(mut bytes) => {
            if protocol == Protocol::V3 {
                bytes.insert(0, 4);
            }
            Message::Binary(bytes.into())
        }
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    packet: Packet,
) -> Result<(), WsError> {
    ws.send(message_of(packet, Protocol::V4)).await
}

/// Runs the closing handshake within a short grace period: sends a close
/// frame (`frame`, or a normal close), then reads until the peer's answer.
/// Dropping the socket with the answer unread would reset the connection,
/// which clients report as an error rather than a close.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    frame: Option<CloseFrame>,
) {
    future::or(
        async {
            if ws.close(frame).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        },
        async {
            Timer::after(CLOSE_GRACE).await;
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::{Config, Data, Handler, Source};
    use crate::rt;
    use std::rc::Rc;

    struct Quiet;

    impl Handler for Quiet {
        fn on_open(&self, _: &SessionRef, _: &str) {}
        fn on_message(&self, _: &SessionRef, _: Data) {}
        fn on_close(&self, _: &SessionRef, _: CloseReason) {}
    }

    /// A stream whose client side the test writes and reads by hand.
    #[derive(Clone, Default)]
    struct Pipe(Rc<std::cell::RefCell<(Vec<u8>, Vec<u8>)>>);

    impl futures_lite::AsyncRead for Pipe {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let mut pipe = self.0.borrow_mut();
            if pipe.0.is_empty() {
                return Poll::Pending;
            }
            let n = buf.len().min(pipe.0.len());
            buf[..n].copy_from_slice(&pipe.0[..n]);
            pipe.0.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl futures_lite::AsyncWrite for Pipe {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.borrow_mut().1.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A masked client text frame with a zero key.
    fn text_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x81];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn a_large_message_leaves_no_large_buffers_behind() {
        rt::block_on(async {
            let engine = Engine::new(Config::default(), Rc::new(Echo));
            let pipe = Pipe::default();
            let source = Source::new("192.168.1.20".parse().unwrap());
            let admission = Admission {
                sid: None,
                protocol: Protocol::V4,
                place: Some(engine.admit(&source).unwrap()),
                address: source.address,
                query: String::new(),
            };
            let Served::Serving(mut serve) = run(&engine, pipe.clone(), Vec::new(), admission)
            else {
                panic!("not serving");
            };
            fn poll<S: AsyncRead + AsyncWrite + Unpin + 'static>(serve: &mut Serve<S>) {
                future::block_on(future::poll_once(serve));
            }
            poll(&mut serve);
            let small = text_frame(b"4small");
            pipe.0.borrow_mut().0.extend_from_slice(&small);
            poll(&mut serve);
            assert_eq!(serve.fresh_starts, 0, "small messages change nothing");
            // 100 kB in, and the same echoed out: both buffers grew.
            let big = format!("4{}", "x".repeat(100_000));
            pipe.0
                .borrow_mut()
                .0
                .extend_from_slice(&text_frame(big.as_bytes()));
            poll(&mut serve);
            poll(&mut serve);
            assert_eq!(serve.fresh_starts, 1);
            let echoed = pipe.0.borrow().1.len();
            assert!(echoed > 100_000, "{echoed}");
            // The socket goes on as before.
            pipe.0.borrow_mut().0.extend_from_slice(&small);
            poll(&mut serve);
            assert_eq!(pipe.0.borrow().1.len(), echoed + small.len() - 4);
            assert_eq!(serve.fresh_starts, 1);
        });
    }

    /// Raw Engine.IO that echoes every message.
    struct Echo;

    impl Handler for Echo {
        fn on_open(&self, _: &SessionRef, _: &str) {}
        fn on_message(&self, session: &SessionRef, data: Data) {
            session.send(data);
        }
        fn on_close(&self, _: &SessionRef, _: CloseReason) {}
    }

    /// A client frame: FIN, text, masked with a zero key, carrying `3`.
    const PONG: &[u8] = &[0x81, 0x81, 0, 0, 0, 0, b'3'];

    #[test]
    fn a_pong_flood_lets_others_run() {
        rt::block_on(async {
            let engine = Engine::new(Config::default(), Rc::new(Quiet));
            let flood = rt::Endless::new(PONG, 10 << 20);
            let read = flood.read.clone();
            let source = Source::new("192.168.1.20".parse().unwrap());
            let admission = Admission {
                sid: None,
                protocol: Protocol::V4,
                place: Some(engine.admit(&source).unwrap()),
                address: source.address,
                query: String::new(),
            };
            let _flooding = rt::spawn(engine.serve_websocket(flood, Vec::new(), admission));
            let read_by_then = rt::spawn(async move { read.get() }).await;
            assert!(read_by_then > 0, "the flood never ran");
            assert!(
                read_by_then <= Turn::UNITS as usize * PONG.len() + 512,
                "the flood held the thread for {read_by_then} bytes"
            );
        });
    }
}
