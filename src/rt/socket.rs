//! A client's TCP connection, read with as few system calls as a message
//! allows.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_lite::{AsyncRead, AsyncWrite};
use smol::Async;

/// A TCP connection that reads ahead and remembers whether its last read
/// emptied the kernel's buffer.
///
/// The WebSocket layer reads in small pieces (its buffer is kept small for
/// idle clients), so a 300-byte ICE candidate took two `recv`s, then a
/// third that found nothing before the wait was armed. Here a small read
/// takes what the kernel has into one buffer per thread and keeps the
/// rest for the next reads (only until they take it: an idle connection
/// holds nothing). And a read that got less than it asked for took
/// everything there was, so the next one waits for readiness first rather
/// than ask the kernel again: a message that arrives alone costs one
/// `recv`, not three. Nothing is missed: the readiness registration is
/// level triggered, so bytes that came meanwhile wake the task at once.
pub struct Socket {
    io: Async<TcpStream>,
    /// Bytes read ahead, from `taken` on.
    ahead: Vec<u8>,
    taken: usize,
    drained: bool,
}

/// Reads shorter than this go through the thread's buffer.
const READ_AHEAD: usize = 16 * 1024;

thread_local! {
    static AHEAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Socket {
    /// The connection.
    pub fn new(io: Async<TcpStream>) -> Socket {
        Socket {
            io,
            ahead: Vec::new(),
            taken: 0,
            drained: false,
        }
    }

    /// Reads from the kernel into `buf`, or, for a small `buf`, as much as
    /// there is, keeping what does not fit.
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.len() >= READ_AHEAD {
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
            self.drained = n < buf.len();
            return Poll::Ready(Ok(n));
        }
        AHEAD.with_borrow_mut(|scratch| {
            if scratch.len() < READ_AHEAD {
                scratch.resize(READ_AHEAD, 0);
            }
            let n = ready!(Pin::new(&mut self.io).poll_read(cx, scratch))?;
            self.drained = n < scratch.len();
            let given = n.min(buf.len());
            buf[..given].copy_from_slice(&scratch[..given]);
            if given < n {
                self.ahead.extend_from_slice(&scratch[given..n]);
            }
            Poll::Ready(Ok(given))
        })
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.taken < this.ahead.len() {
            let rest = &this.ahead[this.taken..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.taken += n;
            if this.taken == this.ahead.len() {
                this.ahead = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(n));
        }
        if this.drained {
            ready!(this.io.poll_readable(cx))?;
        }
        this.poll_recv(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

    use super::*;

    #[test]
    fn after_a_short_read_the_next_waits_for_bytes_and_misses_none() {
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = Async::<TcpStream>::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().unwrap();
            let mut socket = Socket::new(Async::new(server).unwrap());
            let mut buf = [0; 64];
            client.write_all(b"one").await.unwrap();
            assert_eq!(socket.read(&mut buf).await.unwrap(), 3);
            assert!(socket.drained);
            // Nothing there: the read waits rather than fails.
            let waited = socket
                .read(&mut buf)
                .or(async {
                    smol::Timer::after(Duration::from_millis(50)).await;
                    Err(io::ErrorKind::TimedOut.into())
                })
                .await;
            assert_eq!(waited.unwrap_err().kind(), io::ErrorKind::TimedOut);
            // Bytes written while nobody waited are still found (on
            // loopback they are in the server's queue once the write returns).
            client.write_all(b"two").await.unwrap();
            assert_eq!(socket.read(&mut buf).await.unwrap(), 3);
            assert_eq!(&buf[..3], b"two");
            // What a small read does not take waits, and goes when taken.
            client.write_all(&[7; 100]).await.unwrap();
            assert_eq!(socket.read(&mut buf).await.unwrap(), 64);
            assert!(socket.drained, "all 100 bytes came in one recv");
            assert_eq!(socket.read(&mut buf).await.unwrap(), 36);
            assert_eq!(socket.ahead.capacity(), 0);
            // A read larger than the thread's buffer goes straight through;
            // one that fills it leaves the socket maybe not empty.
            client.write_all(&vec![1; 3 * READ_AHEAD]).await.unwrap();
            let mut large = vec![0; READ_AHEAD];
            assert_eq!(socket.read(&mut large).await.unwrap(), READ_AHEAD);
            assert!(!socket.drained);
            let mut left = 2 * READ_AHEAD;
            while left > 0 {
                left -= socket.read(&mut large).await.unwrap();
            }
            drop(client);
            assert_eq!(socket.read(&mut buf).await.unwrap(), 0, "end of stream");
        });
    }
}
