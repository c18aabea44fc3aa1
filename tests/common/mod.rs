//! A real server on an ephemeral port and blocking clients for it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{self, Message, WebSocket};
use signalbox::engineio::{self, CloseReason, Data, Engine, SessionRef};
use signalbox::http::{Cors, Limits, Response};
use signalbox::server::Site;
use signalbox::socketio;

/// Raw Engine.IO that echoes every message.
struct Echo;

impl engineio::Handler for Echo {
    fn on_open(&self, _: &SessionRef, _: &str) {}
    fn on_message(&self, session: &SessionRef, data: Data) {
        session.send(data);
    }
    fn on_close(&self, _: &SessionRef, _: CloseReason) {}
}

/// Settings of a test server.
pub struct Options {
    pub engine: engineio::Config,
    pub limits: Limits,
    pub cors: Vec<String>,
    /// The Socket.IO connect timeout.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            engine: engineio::Config {
                ping_interval: Duration::from_millis(300),
                ping_timeout: Duration::from_millis(200),
                ..engineio::Config::default()
            },
            limits: Limits::default(),
            cors: Vec::new(),
            connect_timeout: socketio::Config::default().connect_timeout,
        }
    }
}

/// Starts a server with a raw Engine.IO echo at `/engine.io/`, Socket.IO
/// (namespace `/`) at `/socket.io/`, and `GET /sessions` answering the
/// number of open Engine.IO sessions of both. Runs until the test process
/// ends.
pub fn start(options: Options) -> SocketAddr {
    start_site(move || {
        let echo = Engine::new(options.engine.clone(), Rc::new(Echo));
        let io = socketio::Server::new(socketio::Config {
            connect_timeout: options.connect_timeout,
            ..socketio::Config::default()
        });
        io.of("/")
            .on("message", |socket, message, _| {
                socket.emit_binary("message-back", &message.args, message.attachments)
            })
            .on("ask", |socket, _, _| {
                // Asks the client, and says how that went.
                let asker = socket.clone();
                socket.emit_with_ack(
                    "question",
                    &[] as &[&serde_json::value::RawValue],
                    Vec::new(),
                    Duration::from_millis(200),
                    move |answer| {
                        let said = match answer {
                            Ok(_) => "answered".to_owned(),
                            Err(error) => error.to_string(),
                        };
                        asker.emit("asked", &[socketio::to_arg(&said)]);
                    },
                );
            })
            .on("bye", |socket, _, _| {
                socket.emit("bye-back", &[] as &[&serde_json::value::RawValue]);
                socket.disconnect_and_close();
            });
        let sio = Engine::new(options.engine, io.handler());
        let counted = (echo.clone(), sio.clone());
        Site::new(Cors::new(options.cors), options.limits)
            .mount("/engine.io/", echo)
            .mount("/socket.io/", sio)
            .pages(move |req, _| {
                (req.path == "/sessions").then(|| {
                    let n = counted.0.session_count() + counted.1.session_count();
                    Response::text(200, n.to_string())
                })
            })
    })
}

/// Starts the site `build` makes, on its own thread, on an ephemeral port.
pub fn start_site(build: impl FnOnce() -> Site + Send + 'static) -> SocketAddr {
    // Bound as the server binds its own: std's backlog of 128 overflowed
    // when the abuse battery opened its connections at once, and the
    // dropped SYNs were sent again a second later.
    let listener =
        signalbox::server::listen("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ready, started) = mpsc::channel();
    std::thread::spawn(move || {
        signalbox::rt::block_on(async move {
            let site = build();
            ready.send(()).ok();
            site.serve(listener).await
        })
    });
    started.recv().expect("server thread started");
    addr
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head and Content-Length body) from `reader`.
pub fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((n, v)) = trimmed.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A connection for raw HTTP exchanges.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

/// A connection to `addr` from the loopback address `from` (127.0.0.2 and
/// the like), so that a test can be several clients to the server's
/// per-address limits.
pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    bind(&fd, &SocketAddr::from((from, 0))).expect("bind to a loopback address");
    connect(&fd, &addr).expect("connect");
    TcpStream::from(fd)
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).expect("connect"))
    }

    /// A client over a connection made already.
    pub fn over(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    pub fn reply(&mut self) -> Reply {
        read_reply(&mut self.reader).expect("reply")
    }

    /// Whether the server closed the connection (EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &str, body: &str) -> Reply {
    let mut client = Client::connect(addr);
    client.send(
        format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.reply()
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, "", "")
}

pub fn post(addr: SocketAddr, target: &str, body: &str) -> Reply {
    request(addr, "POST", target, "", body)
}

/// Opens an Engine.IO polling session at `path`; returns its sid.
pub fn polling_handshake(addr: SocketAddr, path: &str) -> String {
    let reply = get(addr, &format!("{path}?EIO=4&transport=polling"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with('0'), "{reply:?}");
    let open: serde_json::Value = serde_json::from_str(&reply.body[1..]).expect("open JSON");
    open["sid"].as_str().expect("sid").to_owned()
}

pub fn session_count(addr: SocketAddr) -> usize {
    get(addr, "/sessions").body.parse().expect("count")
}

/// Waits up to `limit` for `done`.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

pub type Ws = WebSocket<TcpStream>;

/// Opens a WebSocket to `target` (path and query).
pub fn ws_connect(addr: SocketAddr, target: &str) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let url = format!("ws://{addr}{target}");
    tungstenite::client::client(url.as_str(), stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
        })
}

/// The next text frame; binary frames are returned as `bin:<hex>`.
pub fn ws_next(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Binary(b)) => {
                return Some(format!(
                    "bin:{}",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                ));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The close code the server ends the socket with, reading past
/// whatever else comes first; None when the connection just ends.
pub fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The next frame that is not a ping (`2`), answering pings with pongs.
pub fn ws_next_data(ws: &mut Ws) -> Option<String> {
    loop {
        let frame = ws_next(ws)?;
        if frame == "2" {
            ws.send(Message::text("3")).ok()?;
            continue;
        }
        return Some(frame);
    }
}

pub fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).expect("ws send");
}

/// Sessions open now, all transports, from `/metrics` (signaling sites).
pub fn metric_sessions(addr: SocketAddr) -> usize {
    get(addr, "/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("signalbox_sessions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// A Socket.IO client in the root namespace over a blocking WebSocket,
/// reading with a short timeout so that callers can poll.
pub struct Sio {
    pub ws: Ws,
}

/// How a read of everything the server sends ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server disconnected the socket (`41`).
    Disconnected,
    /// The connection closed.
    Closed,
}

impl Sio {
    /// Connects over a new TCP connection.
    pub fn connect(addr: SocketAddr) -> Sio {
        Sio::over(addr, TcpStream::connect(addr).expect("connect"))
    }

    /// Connects over `stream`, already connected to `addr`.
    pub fn over(addr: SocketAddr, stream: TcpStream) -> Sio {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let Ok((mut ws, _)) = tungstenite::client::client(url.as_str(), stream) else {
            panic!("websocket handshake failed");
        };
        assert!(ws_next(&mut ws).expect("open").starts_with('0'));
        ws_send(&mut ws, "40");
        assert!(ws_next_data(&mut ws).expect("connect").starts_with("40{"));
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        Sio { ws }
    }

    /// Connects and registers as `name`.
    pub fn register(addr: SocketAddr, name: &str) -> Sio {
        Sio::connect(addr).registered(name)
    }

    /// Registers as `name`.
    pub fn registered(mut self, name: &str) -> Sio {
        self.emit("register_user", serde_json::json!({ "userId": name }));
        assert_eq!(self.expect("user_registered")["success"], true);
        self
    }

    pub fn emit(&mut self, event: &str, payload: serde_json::Value) {
        let text = format!("42{}", serde_json::json!([event, payload]));
        self.ws.send(Message::text(text)).expect("emit");
    }

    /// The next event within `limit`, answering pings meanwhile.
    pub fn next(&mut self, limit: Duration) -> Option<(String, serde_json::Value)> {
        let until = Instant::now() + limit;
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let text = text.as_str();
                    if text == "2" {
                        self.ws.send(Message::text("3")).ok()?;
                    } else if let Some(json) = text.strip_prefix("42") {
                        let value: serde_json::Value = serde_json::from_str(json).ok()?;
                        return Some((value[0].as_str()?.to_owned(), value[1].clone()));
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if timed_out(&e) => {}
                Err(_) => return None,
            }
            if Instant::now() >= until {
                return None;
            }
        }
    }

    /// The payload of the next `event` within 5 s, skipping others.
    pub fn expect(&mut self, event: &str) -> serde_json::Value {
        loop {
            let (name, payload) = self
                .next(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("no {event}"));
            if name == event {
                return payload;
            }
        }
    }

    /// Reads (answering pings) until the socket is disconnected or the
    /// connection closes: the text packets before, and how it ended; None
    /// when neither happens within `limit`.
    pub fn read_to_end(&mut self, limit: Duration) -> Option<(Vec<String>, End)> {
        let until = Instant::now() + limit;
        let mut packets = Vec::new();
        while Instant::now() < until {
            match self.ws.read() {
                Ok(Message::Text(text)) if text.as_str() == "41" => {
                    return Some((packets, End::Disconnected));
                }
                Ok(Message::Text(text)) if text.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3"));
                }
                Ok(Message::Text(text)) => packets.push(text.as_str().to_owned()),
                Ok(Message::Close(_)) => return Some((packets, End::Closed)),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if timed_out(&e) => {}
                Err(_) => return Some((packets, End::Closed)),
            }
        }
        None
    }
}

fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
