//! A tiny echo server built on signalbox's layers, showing that each stands
//! on its own; the protocol tests run against it.
//!
//! - `/engine.io/`: raw Engine.IO 4 (no Socket.IO) that sends every message
//!   back, text as text and binary as binary.
//! - `/socket.io/`: Socket.IO on `/` and `/custom`. On connect it emits
//!   `auth` with the client's auth payload; `message` is answered with
//!   `message-back` and the same arguments; `message-with-ack` by calling
//!   the ack with them. On `/` also: `call-me-back` makes the server emit
//!   `call-back` with the same arguments and an ack request, and then emit
//!   `called-back` with what the client acked; `drop` closes the client's
//!   connection at the transport level (no Socket.IO DISCONNECT), so the
//!   client reconnects on its own.
//!
//! Run: `cargo run --example echo -- --listen 127.0.0.1:3000 --ping-interval 300ms
//! --ping-timeout 200ms --connect-timeout 1s`

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use argh::FromArgs;
use signalbox::config::{parse_duration, parse_size};
use signalbox::engineio::{self, CloseReason, Data, Engine, SessionRef};
use signalbox::http::{Cors, Limits};
use signalbox::server::Site;
use signalbox::socketio::{self, Ack, Message, Socket};

/// Engine.IO and Socket.IO echo server.
#[derive(FromArgs)]
struct Args {
    /// address and port to listen on (default 127.0.0.1:3000)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 3000))")]
    listen: SocketAddr,
    /// ping interval (default 25s)
    #[argh(option, from_str_fn(parse_duration))]
    ping_interval: Option<Duration>,
    /// ping timeout (default 20s)
    #[argh(option, from_str_fn(parse_duration))]
    ping_timeout: Option<Duration>,
    /// largest message a client may send, in bytes (default 1000000)
    #[argh(option, from_str_fn(parse_size))]
    max_payload: Option<usize>,
    /// time to join a namespace before the connection is closed (default 45s)
    #[argh(option, from_str_fn(parse_duration))]
    connect_timeout: Option<Duration>,
    /// allowed web origin; repeat for several (default: any)
    #[argh(option)]
    cors_origin: Vec<String>,
}

/// Raw Engine.IO: every message goes straight back.
struct Echo;

impl engineio::Handler for Echo {
    fn on_open(&self, _: &SessionRef, _: &str) {}

    fn on_message(&self, session: &SessionRef, data: Data) {
        session.send(data);
    }

    fn on_close(&self, _: &SessionRef, _: CloseReason) {}
}

fn echo_namespace(io: &socketio::Server, name: &str) {
    io.of(name)
        .on_connect(|socket, auth| {
            let auth = auth.map_or_else(
                || socketio::to_arg(&serde_json::json!({})),
                ToOwned::to_owned,
            );
            // The public Socket.IO test suite waits for the CONNECT answer and
            // only then listens for `auth`; if both arrive in one TCP read, its
            // listener is late. A short pause keeps them in separate reads.
            let socket = socket.clone();
            signalbox::rt::spawn(async move {
                smol::Timer::after(Duration::from_millis(5)).await;
                socket.emit("auth", &[auth]);
            })
            .detach();
            Ok(())
        })
        .on("message", |socket, message, _| {
            socket.emit_binary("message-back", &message.args, message.attachments);
        })
        .on("message-with-ack", |_, message, ack| {
            if let Some(ack) = ack {
                ack.send_binary(&message.args, message.attachments);
            }
        });
}

fn call_me_back(socket: &Socket, message: Message, _: Option<Ack>) {
    let answer_to = socket.clone();
    socket.emit_with_ack(
        "call-back",
        &message.args,
        message.attachments,
        Duration::from_secs(5),
        move |answer| {
            if let Ok(answer) = answer {
                answer_to.emit_binary("called-back", &answer.args, answer.attachments);
            }
        },
    );
}

fn main() -> std::io::Result<()> {
    let args: Args = argh::from_env();
    signalbox::logging::init(log::LevelFilter::Info);

    let mut engine_config = engineio::Config::default();
    let mut io_config = socketio::Config::default();
    if let Some(d) = args.ping_interval {
        engine_config.ping_interval = d;
    }
    if let Some(d) = args.ping_timeout {
        engine_config.ping_timeout = d;
    }
    if let Some(n) = args.max_payload {
        engine_config.max_payload = n;
        io_config.max_attachment_bytes = n;
    }
    if let Some(d) = args.connect_timeout {
        io_config.connect_timeout = d;
    }

    let listener = TcpListener::bind(args.listen)?;
    signalbox::rt::block_on(async move {
        let io = socketio::Server::new(io_config);
        echo_namespace(&io, "/");
        echo_namespace(&io, "/custom");
        io.of("/")
            .on("call-me-back", call_me_back)
            .on("drop", |socket, _, _| socket.session().close());

        let site = Site::new(Cors::new(args.cors_origin), Limits::default())
            .mount(
                "/engine.io/",
                Engine::new(engine_config.clone(), Rc::new(Echo)),
            )
            .mount("/socket.io/", Engine::new(engine_config, io.handler()));
        log::info!("listening on http://{}", listener.local_addr()?);
        site.serve(listener).await
    })
}
