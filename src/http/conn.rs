//! One HTTP connection: reads request heads and bodies within limits and
//! deadlines, writes responses. Generic over the byte stream.

use std::future::pending;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, future};
use smol::Timer;

use super::body::{Chunked, ChunkedError};
use super::head::{BodyLength, HeadError, Request, parse_head};
use crate::rt::Turn;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 2048;

/// Limits on what one connection may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest request head, in bytes.
    pub max_head: usize,
    /// Time allowed from the first byte of a head to its end, and for a body.
    pub request_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Time allowed to write one response: a client that stops reading is
    /// dropped instead of holding the connection and its buffers.
    pub write_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
    /// The most connections open at once from one IP address; loopback
    /// addresses are exempt, since a reverse proxy connects from there.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 25_000,
            max_connections_per_ip: 500,
        }
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection between requests, or idled too long.
    Closed,
    /// The head or body did not arrive in time.
    Timeout,
    /// The head is unacceptable; answer with its status, then close.
    Head(HeadError),
    /// The body is larger than allowed.
    BodyTooLarge,
    /// The chunked framing of the body is broken.
    BadChunked,
    /// Reading from the socket failed; no response is owed.
    Io(io::Error),
}

impl ReadError {
    /// The status to answer with before closing, when one is owed.
    pub fn status(&self) -> Option<u16> {
        match self {
            ReadError::Head(e) => Some(e.status()),
            ReadError::BodyTooLarge => Some(413),
            ReadError::BadChunked => Some(400),
            ReadError::Timeout => Some(408),
            ReadError::Closed | ReadError::Io(_) => None,
        }
    }
}

/// A connection and the bytes read from it but not yet used.
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    limits: Limits,
    body_read: bool,
    /// Requests and bytes of this connection since it last let others run.
    turn: Turn,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps an accepted stream.
    pub fn new(stream: S, limits: Limits) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            limits,
            body_read: false,
            turn: Turn::new(),
        }
    }

    /// The stream, for its address.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream and the bytes read past the last request (for a protocol
    /// switch).
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let mut rest = self.buf;
        // Whoever takes the bytes over may keep this buffer for the life of
        // the connection: hand it over no bigger than its content.
        rest.shrink_to_fit();
        (self.stream, rest)
    }

    /// Charges `units` pieces of work (packets of a polling body, say) to
    /// this connection's turn, letting other tasks run when it is used up.
    pub async fn spend(&mut self, units: u32) {
        self.turn.take(units, 0).await;
    }

    /// Reads more bytes into the buffer; 0 means end of stream. Safe to
    /// cancel: the buffer is whole after every poll. The bytes are charged
    /// to the connection's turn.
    async fn read_more(&mut self) -> io::Result<usize> {
        let read = self.read_ready().await?;
        self.turn.take(0, read).await;
        Ok(read)
    }

    async fn read_ready(&mut self) -> io::Result<usize> {
        future::poll_fn(|cx| {
            let old = self.buf.len();
            self.buf.resize(old + READ_CHUNK, 0);
            let result = Pin::new(&mut self.stream).poll_read(cx, &mut self.buf[old..]);
            let n = match result {
                Poll::Ready(Ok(n)) => n,
                _ => 0,
            };
            self.buf.truncate(old + n);
            result
        })
        .await
    }

    async fn read_more_until(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        let read = async { self.read_more().await.map_err(ReadError::Io) };
        let timeout = async {
            Timer::at(deadline).await;
            Err(ReadError::Timeout)
        };
        future::or(read, timeout).await
    }

    /// Reads the next request head. Waits up to the idle timeout for it to
    /// begin, and up to the request timeout for it to end.
    pub async fn read_request(&mut self) -> Result<Request, ReadError> {
        self.body_read = false;
        // Pipelined requests are in the buffer already and need no read:
        // each is charged, so that a flood of them cannot hold the thread.
        self.turn.take(1, 0).await;
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                if let Some((request, len)) = parse_head(&self.buf).map_err(ReadError::Head)? {
                    self.buf.drain(..len);
                    return Ok(request);
                }
                if self.buf.len() > self.limits.max_head {
                    return Err(ReadError::Head(HeadError::TooLarge));
                }
            }
            let until = match deadline {
                Some(d) => d,
                None if self.buf.is_empty() => Instant::now() + self.limits.idle_timeout,
                None => *deadline.insert(Instant::now() + self.limits.request_timeout),
            };
            match self.read_more_until(until).await {
                Ok(0) => {
                    return Err(if self.buf.is_empty() {
                        ReadError::Closed
                    } else {
                        ReadError::Io(io::ErrorKind::UnexpectedEof.into())
                    });
                }
                Ok(_) => {}
                Err(ReadError::Timeout) if self.buf.is_empty() => return Err(ReadError::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the body of `request`, refusing more than `limit` bytes.
    pub async fn read_body(
        &mut self,
        request: &Request,
        limit: usize,
    ) -> Result<Vec<u8>, ReadError> {
        self.body_read = true;
        let deadline = Instant::now() + self.limits.request_timeout;
        let length = request.body_length().map_err(ReadError::Head)?;
        if let BodyLength::Exact(len) = length
            && len > limit as u64
        {
            return Err(ReadError::BodyTooLarge);
        }
        if length != BodyLength::Empty
            && request.header_has_token("expect", "100-continue")
            && self.buf.is_empty()
        {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(ReadError::Io)?;
        }
        match length {
            BodyLength::Empty => Ok(Vec::new()),
            BodyLength::Exact(len) => {
                let len = len as usize;
                while self.buf.len() < len {
                    if self.read_more_until(deadline).await? == 0 {
                        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                let rest = self.buf.split_off(len);
                Ok(std::mem::replace(&mut self.buf, rest))
            }
            BodyLength::Chunked => {
                let mut chunked = Chunked::new(limit);
                loop {
                    let used = chunked.feed(&self.buf).map_err(|e| match e {
                        ChunkedError::TooLarge => ReadError::BodyTooLarge,
                        ChunkedError::Malformed => ReadError::BadChunked,
                    })?;
                    self.buf.drain(..used);
                    if chunked.is_done() {
                        return Ok(chunked.into_body());
                    }
                    if self.read_more_until(deadline).await? == 0 {
                        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Whether the current request's body was read (successfully or not).
    pub fn body_read(&self) -> bool {
        self.body_read
    }

    /// Writes raw bytes and flushes, within the write timeout.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        let timeout = async {
            Timer::after(self.limits.write_timeout).await;
            Err(io::ErrorKind::TimedOut.into())
        };
        future::or(write, timeout).await
    }

    /// Resolves when the peer closes the connection (or it fails). Bytes the
    /// peer sends meanwhile, such as a pipelined request, are kept.
    pub async fn closed(&mut self) {
        while self.buf.len() <= self.limits.max_head {
            match self.read_more().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        // Too much pipelined: stop reading; the peer waits for us.
        pending::<()>().await;
    }

    /// Shrinks the buffer after a large request, so an idle connection holds
    /// little memory.
    pub fn trim(&mut self) {
        if self.buf.capacity() > 2 * READ_CHUNK && self.buf.len() <= READ_CHUNK {
            self.buf.shrink_to(READ_CHUNK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    /// A peer that accepts nothing and sends nothing.
    struct Stalled;

    impl AsyncRead for Stalled {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Stalled {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    fn limits() -> Limits {
        Limits {
            request_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(80),
            write_timeout: Duration::from_millis(50),
            ..Limits::default()
        }
    }

    #[test]
    fn a_peer_that_stops_reading_times_out() {
        let mut conn = Conn::new(Stalled, limits());
        let started = Instant::now();
        let result = smol::block_on(conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_silent_peer_is_closed_after_the_idle_timeout() {
        let mut conn = Conn::new(Stalled, limits());
        let started = Instant::now();
        assert!(matches!(
            smol::block_on(conn.read_request()),
            Err(ReadError::Closed)
        ));
        assert!(started.elapsed() >= Duration::from_millis(80));
    }

    #[test]
    fn a_half_sent_head_times_out() {
        let mut conn = Conn::new(Stalled, limits());
        conn.buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert!(matches!(
            smol::block_on(conn.read_request()),
            Err(ReadError::Timeout)
        ));
    }
}
