//! The systemd service protocol: readiness and status notifications
//! (`sd_notify`), the watchdog, and socket activation (`LISTEN_FDS`).
//! Each is a few lines over a Unix datagram socket or an inherited file
//! descriptor, and does nothing when systemd did not ask for it.

use std::env;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Where to send notifications, from `NOTIFY_SOCKET`: a path, or an
/// abstract socket name written with a leading `@`.
#[derive(Debug, Clone)]
pub struct Notifier {
    address: SocketAddr,
}

impl Notifier {
    /// The notifier systemd set up for this process, if any.
    pub fn from_env() -> Option<Notifier> {
        Notifier::new(&env::var("NOTIFY_SOCKET").ok()?)
    }

    /// A notifier for a `NOTIFY_SOCKET` value.
    pub fn new(socket: &str) -> Option<Notifier> {
        let address = match socket.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None if socket.starts_with('/') => SocketAddr::from_pathname(socket).ok()?,
            None => return None,
        };
        Some(Notifier { address })
    }

    /// Sends one notification, such as `READY=1` or `STATUS=…`; lines are
    /// separated by `\n`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &self.address)?;
        Ok(())
    }
}

/// Sends `state` to systemd if it is listening; failures are only logged,
/// since the service works without them.
pub fn notify(state: &str) {
    if let Some(notifier) = Notifier::from_env()
        && let Err(error) = notifier.notify(state)
    {
        log::warn!("sd_notify {state:?}: {error}");
    }
}

/// How often systemd expects `WATCHDOG=1` (`WATCHDOG_USEC`), when it
/// expects it from this process (`WATCHDOG_PID`, if set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_from(
        env::var("WATCHDOG_USEC").ok().as_deref(),
        env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The listening socket systemd passed (socket activation), if it passed
/// one to this process.
pub fn inherited_listener() -> Option<TcpListener> {
    let count = listen_fds_from(
        env::var("LISTEN_PID").ok().as_deref(),
        env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    )?;
    if count > 1 {
        log::warn!("systemd passed {count} sockets; using the first");
    }
    // SAFETY: systemd hands this process the descriptors from 3 on, open and
    // owned by nobody else here; LISTEN_PID says they are meant for us, and
    // they are taken once, at start-up.
    let listener = unsafe { TcpListener::from_raw_fd(LISTEN_FDS_START) };
    // Children must not take the same descriptors for theirs.
    // SAFETY: start-up is single-threaded; nothing reads the environment concurrently.
    unsafe {
        env::remove_var("LISTEN_PID");
        env::remove_var("LISTEN_FDS");
        env::remove_var("LISTEN_FDNAMES");
    }
    Some(listener)
}

fn listen_fds_from(pid: Option<&str>, fds: Option<&str>, own_pid: u32) -> Option<u32> {
    let pid: u32 = pid?.trim().parse().ok()?;
    let fds: u32 = fds?.trim().parse().ok()?;
    (pid == own_pid && fds >= 1).then_some(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = env::temp_dir().join(format!("signalbox-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        notifier.notify("READY=1").unwrap();
        assert_eq!(receive(&systemd), "READY=1");
        notifier
            .notify("STATUS=2 users, 1 call\nWATCHDOG=1")
            .unwrap();
        assert_eq!(receive(&systemd), "STATUS=2 users, 1 call\nWATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("signalbox-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier::new(&format!("@{name}")).unwrap();
        notifier.notify("STOPPING=1").unwrap();
        assert_eq!(receive(&systemd), "STOPPING=1");
    }

    #[test]
    fn refuses_relative_socket_names() {
        assert!(Notifier::new("notify.sock").is_none());
        assert!(Notifier::new("").is_none());
    }

    #[test]
    fn watchdog_settings() {
        assert_eq!(
            watchdog_from(Some("4000000"), None, 7),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            watchdog_from(Some("4000000"), Some("7"), 7),
            Some(Duration::from_secs(4))
        );
        assert_eq!(watchdog_from(Some("4000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn socket_activation_settings() {
        assert_eq!(listen_fds_from(Some("7"), Some("1"), 7), Some(1));
        assert_eq!(listen_fds_from(Some("7"), Some("2"), 7), Some(2));
        assert_eq!(listen_fds_from(Some("8"), Some("1"), 7), None);
        assert_eq!(listen_fds_from(Some("7"), Some("0"), 7), None);
        assert_eq!(listen_fds_from(None, Some("1"), 7), None);
        assert_eq!(listen_fds_from(Some("7"), None, 7), None);
    }
}
