//! The I/O side: the accept loop, one task per connection, routing of
//! requests to Engine.IO endpoints or plain pages, and the WebSocket
//! handshake.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::{AsyncRead, AsyncWrite, future};
use smol::{Async, Timer};

use crate::engineio::{Admission, Engine, RequestError, Source};
use crate::http::forwarded::Proxies;
use crate::http::head::BodyLength;
use crate::http::{Conn, Cors, Limits, Method, Request, Response};
use crate::rt::{self, Socket};
use crate::tls::{Stream, Tls};

type Pages = dyn Fn(&Request, &Visitor) -> Option<Answer>;

/// Who asks a page, and what they sent.
#[derive(Debug, Clone, Copy)]
pub struct Visitor<'a> {
    /// The client's address (behind a trusted proxy, the one it forwarded).
    pub address: std::net::IpAddr,
    /// A POST's body (at most [`MAX_PAGE_BODY`] bytes); empty otherwise.
    pub body: &'a [u8],
}

/// The largest body a page takes (the admin API's small JSON).
pub const MAX_PAGE_BODY: usize = 16 * 1024;

/// A page's answer: ready now, or once something else (such as Redis)
/// answered.
pub enum Answer {
    /// A response made on the spot, written at once.
    Now(Response),
    /// The response, when it is ready.
    Later(Pin<Box<dyn Future<Output = Response>>>),
}

impl From<Response> for Answer {
    fn from(response: Response) -> Answer {
        Answer::Now(response)
    }
}

/// What one listening socket serves: Engine.IO endpoints by path prefix,
/// and pages for every other path.
pub struct Site {
    cors: Cors,
    limits: Limits,
    endpoints: Vec<(String, Engine)>,
    pages: Box<Pages>,
    activity: Activity,
    connections: RefCell<Connections>,
    tls: Option<Rc<Tls>>,
    proxies: Proxies,
}

/// Open connections, in all and per IP address.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A future that holds a connection's place while it runs. A struct, not
/// an `async` block: a block would keep a second copy of the future's state.
struct Holding<F> {
    future: F,
    _place: Admitted,
}

impl<F: Future + Unpin> Future for Holding<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.future).poll(cx)
    }
}

/// One admitted connection; dropping it gives its place back.
struct Admitted {
    site: Rc<Site>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut connections = self.site.connections.borrow_mut();
        connections.total -= 1;
        if let Some(count) = connections.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                connections.per_ip.remove(&self.ip);
            }
        }
    }
}

/// How many requests are being handled (read and not yet answered), so a
/// shutdown can wait for the last answers to be written.
#[derive(Debug, Clone, Default)]
pub struct Activity(Rc<Requests>);

#[derive(Debug, Default)]
struct Requests {
    count: Cell<usize>,
    idle: rt::Notify,
}

impl Activity {
    /// Whether no request is being handled.
    pub fn is_idle(&self) -> bool {
        self.0.count.get() == 0
    }

    /// Waits until no request is being handled.
    pub async fn idle(&self) {
        self.0.idle.until(|| self.is_idle()).await
    }

    fn enter(&self) -> Busy {
        self.0.count.set(self.0.count.get() + 1);
        Busy(self.0.clone())
    }
}

/// One request being handled; dropping it ends the request.
struct Busy(Rc<Requests>);

impl Drop for Busy {
    fn drop(&mut self) {
        let left = self.0.count.get() - 1;
        self.0.count.set(left);
        if left == 0 {
            self.0.idle.notify();
        }
    }
}

impl Site {
    /// A site that answers 404 everywhere.
    pub fn new(cors: Cors, limits: Limits) -> Site {
        Site {
            cors,
            limits,
            endpoints: Vec::new(),
            pages: Box::new(|_, _| None),
            activity: Activity::default(),
            connections: RefCell::new(Connections::default()),
            tls: None,
            proxies: Proxies::default(),
        }
    }

    /// Believes `X-Forwarded-For` from `proxies`: the address it names is
    /// the client's for every per-address limit and in the logs.
    pub fn trust(mut self, proxies: Proxies) -> Site {
        self.proxies = proxies;
        self
    }

    /// Serves every connection over TLS with `tls`'s certificate.
    pub fn tls(mut self, tls: Rc<Tls>) -> Site {
        self.tls = Some(tls);
        self
    }

    /// The stream to serve: the TCP connection itself, or TLS over it once
    /// its handshake completed within the request timeout.
    async fn secure(&self, tcp: Async<TcpStream>) -> Option<Stream<Socket>> {
        let tcp = Socket::new(tcp);
        let Some(tls) = &self.tls else {
            return Some(Stream::Plain(tcp));
        };
        let handshake = async { tls.accept(tcp).await.ok() };
        let timeout = async {
            Timer::after(self.limits.request_timeout).await;
            None
        };
        match future::or(handshake, timeout).await {
            Some(stream) => Some(Stream::Tls(Box::new(stream))),
            None => {
                log::debug!("TLS handshake failed or timed out");
                None
            }
        }
    }

    /// Takes a place for a connection from `ip`, if the limits allow. A
    /// reverse proxy carries many clients' connections: the per-IP limit
    /// spares loopback and trusted proxies (per-address session limits
    /// still apply to the clients they forward).
    fn admit(self: &Rc<Site>, ip: IpAddr) -> Option<Admitted> {
        let mut connections = self.connections.borrow_mut();
        if connections.total >= self.limits.max_connections {
            return None;
        }
        let from_ip = connections.per_ip.entry(ip).or_default();
        let proxy = ip.is_loopback() || self.proxies.trusts(ip);
        if *from_ip >= self.limits.max_connections_per_ip && !proxy {
            return None;
        }
        *from_ip += 1;
        connections.total += 1;
        Some(Admitted {
            site: self.clone(),
            ip,
        })
    }

    /// A handle on the number of requests being handled.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Serves `engine` at every path that starts with `path` (such as
    /// `/socket.io/`).
    pub fn mount(mut self, path: &str, engine: Engine) -> Site {
        self.endpoints.push((path.to_owned(), engine));
        self
    }

    /// Answers other requests with `pages`; `None` becomes a 404.
    pub fn pages<A: Into<Answer>>(
        mut self,
        pages: impl Fn(&Request, &Visitor) -> Option<A> + 'static,
    ) -> Site {
        self.pages = Box::new(move |request, visitor| pages(request, visitor).map(Into::into));
        self
    }

    fn endpoint(&self, path: &str) -> Option<&Engine> {
        self.endpoints
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, engine)| engine)
    }

    /// Accepts connections on `listener` forever, each served by its own task
    /// on this thread's executor.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        let listener = Async::new(listener)?;
        let site = Rc::new(self);
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    // Small signaling messages must not wait for Nagle's algorithm.
                    if let Err(error) = stream.get_ref().set_nodelay(true) {
                        log::debug!("TCP_NODELAY: {error}");
                    }
                    match site.admit(peer.ip()) {
                        Some(admitted) => {
                            let site = site.clone();
                            rt::spawn(async move {
                                if let Some(stream) = site.secure(stream).await {
                                    serve_connection(site, stream, admitted).await;
                                }
                            })
                            .detach();
                        }
                        // Over TLS a plain-text answer would be noise: just close.
                        None if site.tls.is_some() => drop(stream),
                        None => rt::spawn(refuse(stream, site.limits.clone())).detach(),
                    }
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    log::warn!("accept failed: {error}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// How many connections may wait to be accepted: a building's phones all
/// reconnect at once after a Wi-Fi restart, and std's default of 128 makes
/// the rest retry a second later.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket with a backlog fit for reconnect storms.
pub fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(address)?;
    // Listening again on a listening socket only changes its backlog.
    rustix::net::listen(&listener, LISTEN_BACKLOG)?;
    Ok(listener)
}

/// Answers a connection past the limits with 503 and closes it.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: S, limits: Limits) {
    log::debug!("connection refused: too many connections");
    let mut conn = Conn::new(stream, limits);
    let response = Response::error(503).header("Retry-After", "5").closing();
    let _ = conn.write_all(&response.serialize(false, false)).await;
}

/// Serves HTTP requests on one connection until it closes or becomes a
/// WebSocket; `admitted` holds its place among the open connections.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    site: Rc<Site>,
    stream: S,
    admitted: Admitted,
) {
    let mut conn = Conn::new(stream, site.limits.clone());
    // The sessions opened on this connection that joined nothing yet.
    let unjoined = Rc::new(Cell::new(0));
    loop {
        let request = match conn.read_request().await {
            Ok(request) => request,
            Err(error) => {
                if let Some(status) = error.status() {
                    let response = Response::error(status).closing();
                    let _ = conn.write_all(&response.serialize(false, false)).await;
                }
                return;
            }
        };
        let _busy = site.activity.enter();
        let body = match request.body_length() {
            Ok(body) => body,
            Err(error) => {
                let response = site.cors.apply(&request, Response::error(error.status()));
                let _ = conn
                    .write_all(&response.closing().serialize(false, false))
                    .await;
                return;
            }
        };
        let engine = site.endpoint(&request.path);
        let source = Source {
            address: site.proxies.client(&request, admitted.ip),
            unjoined: unjoined.clone(),
        };
        let response = if request.method == Method::Options {
            site.cors.preflight(&request)
        } else if let Some(engine) = engine {
            if !site.cors.allows_request(&request, site.tls.is_some()) {
                // Not just unreadable answers: a page from another origin
                // must not drive sessions at all (cross-site WebSocket
                // hijacking included).
                let response = site
                    .cors
                    .apply(&request, RequestError::Forbidden.response());
                let _ = conn
                    .write_all(&response.closing().serialize(false, false))
                    .await;
                return;
            }
            if request.is_websocket_upgrade() {
                let engine = engine.clone();
                return upgrade(&site, &engine, request, &source, conn, admitted).await;
            }
            match engine.serve_polling(&request, &source, &mut conn).await {
                Some(response) => response,
                None => return,
            }
        } else {
            let posted = if request.method == Method::Post && body != BodyLength::Empty {
                match conn.read_body(&request, MAX_PAGE_BODY).await {
                    Ok(posted) => posted,
                    Err(error) => {
                        let status = error.status().unwrap_or(400);
                        let response = site.cors.apply(&request, Response::error(status));
                        let _ = conn
                            .write_all(&response.closing().serialize(false, false))
                            .await;
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            let visitor = Visitor {
                address: source.address,
                body: &posted,
            };
            match (site.pages)(&request, &visitor) {
                Some(Answer::Now(response)) => response,
                Some(Answer::Later(response)) => response.await,
                None => Response::error(404),
            }
        };
        // A body nobody read would be taken for the next request.
        let unread_body = body != BodyLength::Empty && !conn.body_read();
        let response = site.cors.apply(&request, response);
        let keep_alive = request.keep_alive() && !response.close && !unread_body;
        let bytes = response.serialize(keep_alive, request.method == Method::Head);
        if conn.write_all(&bytes).await.is_err() || !keep_alive {
            return;
        }
        conn.trim();
    }
}

/// Completes a WebSocket handshake (RFC 6455 §4.2) and hands the socket to
/// the engine.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    site: &Site,
    engine: &Engine,
    request: Request,
    source: &Source,
    mut conn: Conn<S>,
    admitted: Admitted,
) {
    let accepted = accept_websocket(engine, &request, source)
        .map_err(|refusal| site.cors.apply(&request, refusal).closing());
    // The request head is not needed for the life of the socket.
    drop(request);
    let (head, admission) = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            let _ = conn.write_all(&refusal.serialize(false, false)).await;
            return;
        }
    };
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let (stream, leftover) = conn.into_parts();
    // A task of its own, sized for the socket's life rather than for the
    // HTTP handling that led to it, which ends here.
    rt::spawn(Holding {
        future: engine.serve_websocket(stream, leftover, admission),
        _place: admitted,
    })
    .detach();
}

/// Checks an upgrade request: the 101 answer and what the engine admitted,
/// or the refusal.
fn accept_websocket(
    engine: &Engine,
    request: &Request,
    source: &Source,
) -> Result<(String, Admission), Response> {
    let key = request
        .header("sec-websocket-key")
        .map(str::trim)
        .filter(|k| crate::base64::decode(k).is_ok_and(|b| b.len() == 16));
    let Some(key) = key.filter(|_| request.method == Method::Get) else {
        return Err(Response::error(400));
    };
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(Response::error(426).header("Sec-WebSocket-Version", "13"));
    }
    let admission = engine
        .check_websocket(request, source)
        .map_err(|error| error.response())?;
    let accept = derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    Ok((head, admission))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Turn;

    #[test]
    fn a_connection_that_is_always_ready_lets_others_run() {
        rt::block_on(async {
            let site = Rc::new(
                Site::new(Cors::default(), Limits::default())
                    .pages(|_, _| Some(Response::text(200, "ok\n"))),
            );
            let flood = rt::Endless::new(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 10 << 20);
            let read = flood.read.clone();
            let admitted = site.admit("192.168.1.20".parse().unwrap()).unwrap();
            let _flooding = rt::spawn(serve_connection(site, flood, admitted));
            // Queued behind the flood: it runs once the flood yields.
            let read_by_then = rt::spawn(async move { read.get() }).await;
            assert!(read_by_then > 0, "the flood never ran");
            assert!(
                read_by_then <= Turn::BYTES + 4096,
                "the flood held the thread for {read_by_then} bytes"
            );
        });
    }

    #[test]
    fn admission_limits_total_and_per_ip_but_not_loopback() {
        let limits = Limits {
            max_connections: 4,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let site = Rc::new(Site::new(Cors::default(), limits));
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let other: IpAddr = "192.168.1.21".parse().unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let a = site.admit(lan).unwrap();
        let _b = site.admit(lan).unwrap();
        assert!(site.admit(lan).is_none(), "per-IP limit");
        let _c = site.admit(other).unwrap();
        let _d = site.admit(proxy).unwrap();
        assert!(site.admit(proxy).is_none(), "total limit");
        drop(a);
        assert!(
            site.admit(proxy).is_some(),
            "loopback is not held to the per-IP limit"
        );
        assert_eq!(site.connections.borrow().per_ip.get(&lan), Some(&1));
    }
}
