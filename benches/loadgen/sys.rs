//! The operating system: open-files limit, clock ticks, sockets bound to a
//! source address, resets on close. Linux only, through a few declarations
//! of libc functions (no extra crate).

use std::ffi::{c_int, c_long, c_ulong, c_void};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

#[repr(C)]
pub(crate) struct RLimit {
    pub(crate) cur: c_ulong,
    pub(crate) max: c_ulong,
}

#[repr(C)]
pub(crate) struct SockAddrIn {
    pub(crate) family: u16,
    pub(crate) port: u16,
    pub(crate) addr: [u8; 4],
    pub(crate) zero: [u8; 8],
}

#[repr(C)]
pub(crate) struct Linger {
    pub(crate) onoff: c_int,
    pub(crate) linger: c_int,
}

pub(crate) const RLIMIT_NOFILE: c_int = 7;
pub(crate) const SC_CLK_TCK: c_int = 2;
pub(crate) const AF_INET: c_int = 2;
pub(crate) const SOCK_STREAM: c_int = 1;
pub(crate) const SOCK_NONBLOCK: c_int = 0o4000;
pub(crate) const SOCK_CLOEXEC: c_int = 0o2000000;
pub(crate) const SOL_SOCKET: c_int = 1;
pub(crate) const SO_LINGER: c_int = 13;
pub(crate) const IPPROTO_IP: c_int = 0;
pub(crate) const IP_BIND_ADDRESS_NO_PORT: c_int = 24;
pub(crate) const EINPROGRESS: i32 = 115;

unsafe extern "C" {
    pub(crate) fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
    pub(crate) fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
    pub(crate) fn sysconf(name: c_int) -> c_long;
    pub(crate) fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    pub(crate) fn bind(fd: c_int, addr: *const SockAddrIn, len: u32) -> c_int;
    pub(crate) fn connect(fd: c_int, addr: *const SockAddrIn, len: u32) -> c_int;
    pub(crate) fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *const c_void,
        len: u32,
    ) -> c_int;
}

/// Raises the soft limit on open files to the hard one; returns both.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut limit = RLimit { cur: 0, max: 0 };
    // SAFETY: getrlimit fills in the one RLimit it is given.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.cur < limit.max {
        let raised = RLimit {
            cur: limit.max,
            max: limit.max,
        };
        // SAFETY: setrlimit only reads the RLimit it is given.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.cur = limit.max;
    }
    // rlim_t is 32 bits wide on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((limit.cur as u64, limit.max as u64))
}

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { sysconf(SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

pub(crate) fn sockaddr(addr: SocketAddrV4) -> SockAddrIn {
    SockAddrIn {
        family: AF_INET as u16,
        port: addr.port().to_be(),
        addr: addr.ip().octets(),
        zero: [0; 8],
    }
}

pub(crate) fn check(result: c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking TCP socket bound to `source` whose connect to `dest`
/// has started; wait until it is writable, then check `take_error`.
/// Binding first lets connections come from 127.0.0.2, 127.0.0.3, …, each
/// with its own ~28k ephemeral ports.
pub fn start_connect(source: Ipv4Addr, dest: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: socket has no preconditions.
    let fd = unsafe { socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just made that nothing else owns; the
    // TcpStream closes it, on the error paths below too.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let len = size_of::<SockAddrIn>() as u32;
    let one: c_int = 1;
    // Pick the port at connect time, per destination, rather than at bind
    // time for all of them. Best effort: older kernels lack it.
    // SAFETY: the option value is one c_int, as its length says.
    let _ = unsafe {
        setsockopt(
            fd,
            IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            size_of::<c_int>() as u32,
        )
    };
    let from = sockaddr(SocketAddrV4::new(source, 0));
    // SAFETY: `from` is a sockaddr_in of `len` bytes.
    check(unsafe { bind(fd, &from, len) })?;
    let to = sockaddr(dest);
    // SAFETY: `to` is a sockaddr_in of `len` bytes.
    if let Err(error) = check(unsafe { connect(fd, &to, len) })
        && error.raw_os_error() != Some(EINPROGRESS)
    {
        return Err(error);
    }
    Ok(stream)
}

/// Makes closing `stream` reset the connection (RST), as a client that
/// vanishes does, and leaves no TIME_WAIT behind.
pub fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
    let linger = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: the option value is one struct linger, as its length says.
    check(unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            (&raw const linger).cast(),
            size_of::<Linger>() as u32,
        )
    })
}
