//! Connections: the minimal Engine.IO 4 / Socket.IO 5 client over WebSocket
//! and HTTP long-polling that every scenario uses.

use super::*;

thread_local! {
    pub(crate) static EX: LocalExecutor<'static> = const { LocalExecutor::new() };
    pub(crate) static TALLY: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

pub(crate) fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    EX.with(|ex| ex.spawn(future))
}

/// Counts something odd that happened (an unexpected event, an error), by kind.
pub(crate) fn tally(kind: impl Into<String>) {
    let mut kind = kind.into();
    if kind.len() > 80 {
        let mut end = 80;
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
    }
    TALLY.with(|t| *t.borrow_mut().entry(kind).or_default() += 1);
}

pub(crate) fn take_tally() -> BTreeMap<String, u64> {
    TALLY.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    future::or(work, async {
        Timer::after(limit).await;
        Err(format!("timeout: {what}"))
    })
    .await
}

/// Where to connect, and from which loopback source address.
pub(crate) struct Net {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) per_source: usize,
    pub(crate) opened: Cell<usize>,
    pub(crate) sources: Cell<usize>,
    /// `--tls`: every connection does a full TLS handshake first.
    pub(crate) tls: Option<tls::Client>,
}

impl Net {
    /// A connection to the server: TCP with Nagle off and reset-on-close,
    /// and TLS over it with `--tls`. Every `per_source` connections move to
    /// the next source address (127.0.0.1, then .2, .3, …), so a run past
    /// ~28k connections does not run out of ephemeral ports.
    pub(crate) async fn connect(&self) -> io::Result<Stream> {
        let n = self.opened.get();
        self.opened.set(n + 1);
        let block = n / self.per_source;
        let stream = match self.addr {
            SocketAddr::V4(dest) if block > 0 => {
                let source = Ipv4Addr::new(127, 0, (block / 254) as u8, (block % 254 + 1) as u8);
                self.sources.set(self.sources.get().max(block + 1));
                let stream = Async::new(sys::start_connect(source, dest)?)?;
                stream.writable().await?;
                if let Some(error) = stream.get_ref().take_error()? {
                    return Err(error);
                }
                stream.get_ref().peer_addr()?;
                stream
            }
            _ => {
                self.sources.set(self.sources.get().max(1));
                Async::<TcpStream>::connect(self.addr).await?
            }
        };
        stream.get_ref().set_nodelay(true)?;
        sys::reset_on_close(stream.get_ref())?;
        match &self.tls {
            None => Ok(Stream::Plain(stream)),
            Some(tls) => tls.handshake(stream).await,
        }
    }
}

pub(crate) fn io_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

/// An HTTP/1.1 response: status, body, and whether the server closes the
/// connection after it.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) close: bool,
}

/// One HTTP/1.1 client connection: requests one after the other.
pub(crate) struct Http {
    pub(crate) stream: Stream,
    pub(crate) buf: Vec<u8>,
}

impl Http {
    pub(crate) async fn open(net: &Net) -> io::Result<Http> {
        Ok(Http {
            stream: net.connect().await?,
            buf: Vec::new(),
        })
    }

    pub(crate) async fn request(
        &mut self,
        net: &Net,
        method: &str,
        target: &str,
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<Reply> {
        let mut out = String::with_capacity(128 + target.len());
        let _ = write!(out, "{method} {target} HTTP/1.1\r\nHost: {}\r\n", net.host);
        if method == "POST" {
            let _ = write!(
                out,
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        out.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out).await?;
        let mut reply = self.read_reply().await?;
        reply.close |= !keep_alive;
        Ok(reply)
    }

    /// Reads more bytes into the buffer; an error at end of stream.
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
        let old = self.buf.len();
        self.buf.resize(old + 4096, 0);
        let read = self.stream.read(&mut self.buf[old..]).await;
        self.buf.truncate(old + *read.as_ref().unwrap_or(&0));
        match read? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    pub(crate) async fn need(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(())
    }

    pub(crate) async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io_error("chunk size line too long"));
            }
            self.fill().await?;
        }
    }

    pub(crate) async fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf).map_err(io_error)? {
                httparse::Status::Partial => {
                    if self.buf.len() > 64 * 1024 {
                        return Err(io_error("response head too long"));
                    }
                    self.fill().await?;
                }
                httparse::Status::Complete(head_len) => {
                    let status = response.code.unwrap_or(0);
                    let mut close = response.version == Some(0);
                    let mut length = None;
                    let mut chunked = false;
                    for header in response.headers.iter() {
                        let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                        if header.name.eq_ignore_ascii_case("content-length") {
                            length = Some(value.trim().parse::<usize>().map_err(io_error)?);
                        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.contains("chunked");
                        } else if header.name.eq_ignore_ascii_case("connection") {
                            if value.contains("close") {
                                close = true;
                            } else if value.contains("keep-alive") {
                                close = false;
                            }
                        }
                    }
                    self.buf.drain(..head_len);
                    let body = if chunked {
                        self.read_chunked().await?
                    } else if let Some(length) = length {
                        self.need(length).await?;
                        self.buf.drain(..length).collect()
                    } else {
                        close = true;
                        while self.fill().await.is_ok() {}
                        std::mem::take(&mut self.buf)
                    };
                    return Ok(Reply {
                        status,
                        body,
                        close,
                    });
                }
            }
        }
    }

    pub(crate) async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(io_error)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            self.need(size + 2).await?;
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// GET `path` and parse the JSON body.
pub(crate) async fn get_json(net: &Net, path: &str) -> Result<Value, String> {
    let mut http = Http::open(net).await.map_err(|e| e.to_string())?;
    let reply = http
        .request(net, "GET", path, b"", false)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("GET {path} answered {}", reply.status));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("GET {path}: {e}"))
}

/// The number of registered users according to GET /users.
pub(crate) async fn users_online(net: &Net) -> Result<u64, String> {
    let users = get_json(net, "/users").await?;
    users["totalUsers"]
        .as_u64()
        .or_else(|| users["connectedUsers"].as_array().map(|a| a.len() as u64))
        .ok_or_else(|| format!("GET /users: no totalUsers in {users}"))
}

pub(crate) type WsStream = Stream;

/// The sending half of one Engine.IO session.
pub(crate) enum Tx {
    Ws(WebSocketSender<WsStream>),
    Polling {
        net: Rc<Net>,
        target: String,
        conn: Option<Http>,
        keep: bool,
    },
}

impl Tx {
    /// Sends Engine.IO packets (type digit and data each): one WebSocket
    /// message per packet, or one POST for all of them.
    pub(crate) async fn send(&mut self, packets: &[&str]) -> io::Result<()> {
        match self {
            Tx::Ws(ws) => {
                // Frames are gathered and flushed once, so a burst costs one
                // system call: the generator must not be what limits a run.
                for packet in packets {
                    future::poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
                        .await
                        .map_err(io_error)?;
                    Pin::new(&mut *ws)
                        .start_send(Message::text(*packet))
                        .map_err(io_error)?;
                }
                future::poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
                    .await
                    .map_err(io_error)
            }
            Tx::Polling {
                net,
                target,
                conn,
                keep,
            } => {
                let body = packets.join("\x1e");
                let reused = conn.is_some();
                let mut http = match conn.take() {
                    Some(http) => http,
                    None => Http::open(net).await?,
                };
                let reply = match http
                    .request(net, "POST", target, body.as_bytes(), *keep)
                    .await
                {
                    Ok(reply) => reply,
                    // A kept connection the server closed while it idled:
                    // once more on a fresh one.
                    Err(_) if reused => {
                        http = Http::open(net).await?;
                        http.request(net, "POST", target, body.as_bytes(), *keep)
                            .await?
                    }
                    Err(error) => return Err(error),
                };
                if reply.status != 200 {
                    return Err(io_error(format!(
                        "POST answered {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    )));
                }
                if !reply.close {
                    *conn = Some(http);
                }
                Ok(())
            }
        }
    }
}

/// The receiving half of one Engine.IO session.
pub(crate) enum Rx {
    Ws(WebSocketReceiver<WsStream>),
    Polling {
        net: Rc<Net>,
        target: String,
        conn: Option<Http>,
        queue: VecDeque<String>,
    },
}

impl Rx {
    /// The next Engine.IO packet; an error once the session is gone.
    pub(crate) async fn next(&mut self) -> io::Result<String> {
        match self {
            Rx::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                    Some(Ok(Message::Close(_))) | None => {
                        return Err(io_error("websocket closed"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(io_error(error)),
                }
            },
            Rx::Polling {
                net,
                target,
                conn,
                queue,
            } => loop {
                if let Some(packet) = queue.pop_front() {
                    return Ok(packet);
                }
                let mut http = match conn.take() {
                    Some(http) => http,
                    None => Http::open(net).await?,
                };
                let reply = http.request(net, "GET", target, b"", true).await?;
                if reply.status != 200 {
                    return Err(io_error(format!(
                        "poll answered {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    )));
                }
                let body = String::from_utf8(reply.body).map_err(io_error)?;
                queue.extend(
                    body.split('\x1e')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                );
                if !reply.close {
                    *conn = Some(http);
                }
            },
        }
    }
}

/// What a client's reader saw: pings answered, and why the session ended.
#[derive(Default)]
pub(crate) struct ClientState {
    pub(crate) pings: Cell<u32>,
    pub(crate) closed: RefCell<Option<String>>,
}

/// One Socket.IO client on the default namespace. A reader task answers
/// pings and queues the Socket.IO packets (`42[…]`) for whoever waits on
/// `events`; dropping the client resets its TCP connections.
pub(crate) struct Client {
    pub(crate) name: String,
    pub(crate) polling: bool,
    pub(crate) tx: Rc<Mutex<Tx>>,
    pub(crate) events: channel::Receiver<String>,
    pub(crate) state: Rc<ClientState>,
    pub(crate) ping_interval: Duration,
    /// The socket id and, when the server offers recovery, the private id
    /// the CONNECT answer gave.
    pub(crate) sid: String,
    pub(crate) pid: Option<String>,
    pub(crate) _reader: Task<()>,
}

#[derive(Debug)]
pub(crate) enum Fail {
    Timeout(String),
    Closed(String),
    Unexpected(String),
    Send(String),
}

impl Fail {
    pub(crate) fn kind(&self) -> String {
        match self {
            Fail::Timeout(what) => format!("timeout waiting for {what}"),
            Fail::Closed(why) => format!("session closed: {why}"),
            Fail::Unexpected(event) => format!("unexpected {event}"),
            Fail::Send(why) => format!("send failed: {why}"),
        }
    }
}

/// Events that mean a call step failed, when another one was awaited.
pub(crate) const FAILURE_EVENTS: &[&str] = &[
    "call_failed",
    "call_busy",
    "call_declined",
    "call_timeout",
    "force_disconnect",
    "signaling_error",
];

/// The event name of a Socket.IO EVENT packet as queued (`42["name",…]`).
pub(crate) fn event_name(packet: &str) -> Option<&str> {
    let rest = packet.strip_prefix("42")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("[\"")?;
    Some(&rest[..rest.find('"')?])
}

/// The first argument of an EVENT packet.
pub(crate) fn event_payload(packet: &str) -> Option<Value> {
    let start = packet.find('[')?;
    match serde_json::from_str::<Value>(&packet[start..]).ok()? {
        Value::Array(mut items) if items.len() > 1 => Some(items.swap_remove(1)),
        _ => None,
    }
}

/// `42["event",payload]`.
pub(crate) fn event_packet(event: &str, payload: &Value) -> String {
    format!("42[\"{event}\",{payload}]")
}

impl Client {
    /// Opens an Engine.IO session (WebSocket or polling), joins the default
    /// namespace and starts the reader. `keep_posts` keeps a polling client's
    /// POST connection open between sends (else each POST has its own).
    pub(crate) async fn connect(
        net: &Rc<Net>,
        name: String,
        polling: bool,
        keep_posts: bool,
    ) -> Result<Client, String> {
        Client::connect_as(net, name, polling, keep_posts, None).await
    }

    /// `connect`, coming back with the private id of a lost socket.
    pub(crate) async fn connect_as(
        net: &Rc<Net>,
        name: String,
        polling: bool,
        keep_posts: bool,
        pid: Option<&str>,
    ) -> Result<Client, String> {
        let (mut tx, mut rx, open) = if polling {
            let target = format!("{}?EIO=4&transport=polling", net.path);
            let mut http = Http::open(net).await.map_err(|e| format!("connect: {e}"))?;
            let reply = http
                .request(net, "GET", &target, b"", true)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if reply.status != 200 {
                return Err(format!("handshake answered {}", reply.status));
            }
            let body = String::from_utf8(reply.body).map_err(|e| e.to_string())?;
            let mut packets = body.split('\x1e').map(str::to_owned);
            let open = packets.next().unwrap_or_default();
            let sid = open
                .strip_prefix('0')
                .and_then(|o| serde_json::from_str::<Value>(o).ok())
                .and_then(|o| o["sid"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("bad open packet {open:?}"))?;
            let target = format!("{target}&sid={sid}");
            let tx = Tx::Polling {
                net: net.clone(),
                target: target.clone(),
                conn: None,
                keep: keep_posts,
            };
            let rx = Rx::Polling {
                net: net.clone(),
                target,
                conn: (!reply.close).then_some(http),
                queue: packets.collect(),
            };
            (tx, rx, open)
        } else {
            let stream = net.connect().await.map_err(|e| format!("connect: {e}"))?;
            let scheme = if net.tls.is_some() { "wss" } else { "ws" };
            let url = format!(
                "{scheme}://{}{}?EIO=4&transport=websocket",
                net.host, net.path
            );
            let config = WebSocketConfig::default()
                .read_buffer_size(WS_READ_BUFFER)
                .write_buffer_size(0);
            let (ws, _) = async_tungstenite::client_async_with_config(url, stream, Some(config))
                .await
                .map_err(|e| format!("websocket handshake: {e}"))?;
            let (sender, receiver) = ws.split();
            let mut rx = Rx::Ws(receiver);
            let open = rx.next().await.map_err(|e| format!("open packet: {e}"))?;
            (Tx::Ws(sender), rx, open)
        };
        let ping_interval = open
            .strip_prefix('0')
            .and_then(|o| serde_json::from_str::<Value>(o).ok())
            .and_then(|o| o["pingInterval"].as_u64())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("bad open packet {open:?}"))?;

        let connect = match pid {
            Some(pid) => format!("40{}", json!({ "pid": pid })),
            None => "40".to_owned(),
        };
        tx.send(&[&connect])
            .await
            .map_err(|e| format!("namespace connect: {e}"))?;
        // A recovered socket gets what it missed before the CONNECT answer.
        let mut early = Vec::new();
        let answer = loop {
            let packet = rx
                .next()
                .await
                .map_err(|e| format!("namespace connect: {e}"))?;
            if let Some(answer) = packet.strip_prefix("40") {
                break serde_json::from_str::<Value>(answer).unwrap_or_default();
            } else if packet.starts_with("44") {
                return Err(format!("namespace refused: {packet}"));
            } else if packet == "2" {
                tx.send(&["3"]).await.map_err(|e| format!("pong: {e}"))?;
            } else if packet.starts_with('1') {
                return Err("session closed during connect".into());
            } else if packet.starts_with("42") {
                early.push(packet);
            }
        };
        let field = |name: &str| answer[name].as_str().map(str::to_owned);

        let tx = Rc::new(Mutex::new(tx));
        let state = Rc::new(ClientState::default());
        let (queue, events) = channel::unbounded();
        for packet in early {
            let _ = queue.try_send(packet);
        }
        let reader = spawn(read_loop(rx, tx.clone(), queue, state.clone()));
        Ok(Client {
            name,
            polling,
            tx,
            events,
            state,
            ping_interval,
            sid: field("sid").unwrap_or_default(),
            pid: field("pid"),
            _reader: reader,
        })
    }

    pub(crate) async fn send(&self, packets: &[&str]) -> Result<(), Fail> {
        self.tx
            .lock()
            .await
            .send(packets)
            .await
            .map_err(|e| Fail::Send(e.to_string()))
    }

    pub(crate) async fn emit(&self, event: &str, payload: Value) -> Result<(), Fail> {
        self.send(&[&event_packet(event, &payload)]).await
    }

    /// Waits for `event`; other events are tallied and skipped, except the
    /// ones that say a call failed.
    pub(crate) async fn expect(&self, event: &str, timeout: Duration) -> Result<String, Fail> {
        self.expect_skipping(event, timeout, &[]).await
    }

    /// `expect`, skipping the `benign` events without tallying them.
    pub(crate) async fn expect_skipping(
        &self,
        event: &str,
        timeout: Duration,
        benign: &[&str],
    ) -> Result<String, Fail> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = future::or(async { Some(self.events.recv().await) }, async {
                Timer::at(deadline).await;
                None
            })
            .await;
            let packet = match next {
                None => return Err(Fail::Timeout(event.to_owned())),
                Some(Err(_)) => {
                    let why = self.state.closed.borrow().clone().unwrap_or_default();
                    return Err(Fail::Closed(why));
                }
                Some(Ok(packet)) => packet,
            };
            match event_name(&packet) {
                Some(name) if name == event => return Ok(packet),
                Some(name) if FAILURE_EVENTS.contains(&name) => {
                    return Err(Fail::Unexpected(format!("{name} awaiting {event}")));
                }
                Some(name) if benign.contains(&name) => {}
                Some(name) => tally(format!("skipped {name} awaiting {event}")),
                None => tally(format!("skipped packet {}", &packet[..packet.len().min(8)])),
            }
        }
    }

    /// Drops whatever events are queued.
    pub(crate) fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// register_user, then waits for a successful user_registered.
    pub(crate) async fn register(&self, timeout: Duration) -> Result<(), Fail> {
        self.emit("register_user", json!({ "userId": self.name }))
            .await?;
        let packet = self.expect("user_registered", timeout).await?;
        match event_payload(&packet) {
            Some(reply) if reply["success"] == Value::Bool(true) => Ok(()),
            _ => Err(Fail::Unexpected(format!("registration refused: {packet}"))),
        }
    }

    pub(crate) fn closed(&self) -> Option<String> {
        self.state.closed.borrow().clone()
    }

    /// Leaves as `socket.disconnect()` does: a namespace disconnect (`41`),
    /// then the Engine.IO close (a WebSocket close frame, or a `1` packet
    /// over polling); then waits until the server has closed the session,
    /// dropping whatever events were still queued.
    pub(crate) async fn close_politely(&self, timeout: Duration) -> Result<(), Fail> {
        within(timeout, "polite close", async {
            let mut tx = self.tx.lock().await;
            match &mut *tx {
                Tx::Ws(ws) => {
                    for message in [Message::text("41"), Message::Close(None)] {
                        future::poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
                            .await
                            .map_err(|e| e.to_string())?;
                        Pin::new(&mut *ws)
                            .start_send(message)
                            .map_err(|e| e.to_string())?;
                    }
                    future::poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Tx::Polling { .. } => tx.send(&["41", "1"]).await.map_err(|e| e.to_string())?,
            }
            drop(tx);
            while self.events.recv().await.is_ok() {}
            Ok(())
        })
        .await
        .map_err(|e| {
            if e.starts_with("timeout") {
                Fail::Timeout("the server to close the session".into())
            } else {
                Fail::Send(e)
            }
        })
    }
}

pub(crate) async fn read_loop(
    mut rx: Rx,
    tx: Rc<Mutex<Tx>>,
    queue: channel::Sender<String>,
    state: Rc<ClientState>,
) {
    let why = loop {
        let packet = match rx.next().await {
            Ok(packet) => packet,
            Err(error) => break error.to_string(),
        };
        match packet.as_bytes().first() {
            Some(b'2') => {
                if let Err(error) = tx.lock().await.send(&["3"]).await {
                    break format!("pong: {error}");
                }
                state.pings.set(state.pings.get() + 1);
            }
            Some(b'4') => {
                if packet.starts_with("41") {
                    break "server disconnected the namespace".into();
                }
                let _ = queue.try_send(packet);
            }
            Some(b'1') => break "server closed the session".into(),
            _ => {}
        }
    };
    state.closed.replace(Some(why));
    queue.close();
}
