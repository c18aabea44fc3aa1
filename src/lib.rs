//! signalbox: a WebRTC signaling server for on-premises intercoms, speaking
//! Socket.IO v4 (Engine.IO 4, Socket.IO 5) so unmodified `socket.io-client`
//! apps work with it.
//!
//! The layers, each knowing only the one below:
//! [`http`] → [`engineio`] → [`socketio`] → [`signaling`]; [`server`] is the
//! I/O that wires them to sockets on one thread ([`rt`]).

pub mod base64;
pub mod config;
pub mod engineio;
pub mod http;
pub mod id;
pub mod logging;
pub mod rt;
pub mod server;
pub mod signaling;
pub mod socketio;
pub mod timestamp;

use std::io;
use std::net::TcpListener;

pub use config::Config;

/// Serves signalbox on `listener` until the process ends. Blocks the calling
/// thread, which runs every task of the server.
pub fn serve(listener: TcpListener, config: Config) -> io::Result<()> {
    rt::block_on(async move {
        let site = signaling::site(&config);
        log::info!("listening on http://{}", listener.local_addr()?);
        site.serve(listener).await
    })
}
