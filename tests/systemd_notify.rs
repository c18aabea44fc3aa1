//! The `signalbox` binary against a fake systemd: notifications on a
//! `NOTIFY_SOCKET` (a path or an abstract `@` name), the watchdog, and a
//! listening socket passed by socket activation. Runs anywhere; the real
//! systemd is `tests/systemd`'s job.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self, UnixDatagram};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

/// How long any one wait may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running `signalbox`, killed if the test ends before it exits.
struct Server {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `command` (a clean environment plus the test's variables),
    /// collecting its log lines.
    fn start(mut command: Command) -> Server {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn signalbox");
        let (lines, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, stderr }
    }

    /// SIGTERM, as systemd stops a service.
    fn terminate(&self) {
        let status = Command::new("/bin/sh")
            .args(["-c", "kill -TERM \"$1\"", "sh"])
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM: {status}");
    }

    /// The exit status, within `PATIENCE`.
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "signalbox did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first log line containing `text`, within `PATIENCE`.
    fn log_line(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The notification socket systemd would listen on.
struct Systemd {
    socket: UnixDatagram,
    /// The file of a path socket, removed with its directory at the end.
    dir: Option<PathBuf>,
}

impl Systemd {
    /// A socket at a path; returns it and its `NOTIFY_SOCKET` value.
    fn at_path(test: &str) -> (Systemd, String) {
        let dir = std::env::temp_dir().join(format!(
            "signalbox-{test}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let value = path.to_str().expect("UTF-8 temp dir").to_owned();
        (Systemd::ready(socket, Some(dir)), value)
    }

    /// A socket with an abstract name; returns it and its `NOTIFY_SOCKET`
    /// value, `@name`.
    fn abstract_name(test: &str) -> (Systemd, String) {
        let name = format!("signalbox-{test}-{}-{}", std::process::id(), unique());
        let address = net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let socket = UnixDatagram::bind_addr(&address).expect("bind the notify socket");
        (Systemd::ready(socket, None), format!("@{name}"))
    }

    fn ready(socket: UnixDatagram, dir: Option<PathBuf>) -> Systemd {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        Systemd { socket, dir }
    }

    /// Notifications, one datagram each, until `done` says enough was
    /// seen; fails after `PATIENCE`.
    fn receive_until(&self, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while !done(&received) {
            assert!(
                Instant::now() < deadline,
                "notifications so far: {received:?}"
            );
            match self.socket.recv(&mut buf) {
                Ok(n) => received.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(error) if is_timeout(&error) => {}
                Err(error) => panic!("recv: {error}"),
            }
        }
        received
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A number no other call in this process gets, for unique names.
fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How many notifications carry the line `line`.
fn count(notifications: &[String], line: &str) -> usize {
    notifications
        .iter()
        .filter(|n| n.lines().any(|l| l == line))
        .count()
}

fn has_status(notifications: &[String]) -> bool {
    notifications.iter().any(|n| {
        n.lines()
            .any(|l| l.len() > "STATUS=".len() && l.starts_with("STATUS="))
    })
}

/// `signalbox` on an ephemeral loopback port, with a clean environment.
fn signalbox() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("SIGNALBOX_LOG_LEVEL", "info")
        .args(["--listen", "127.0.0.1:0"]);
    command
}

#[test]
fn ready_status_watchdog_and_stopping_on_a_path_socket() {
    let (systemd, notify_socket) = Systemd::at_path("notify");
    let mut command = signalbox();
    // A keep-alive every 200 ms.
    command
        .env("NOTIFY_SOCKET", &notify_socket)
        .env("WATCHDOG_USEC", "400000");
    let mut server = Server::start(command);

    let running = systemd.receive_until(|n| count(n, "WATCHDOG=1") >= 2);
    assert_eq!(
        count(&running[..1], "READY=1"),
        1,
        "READY=1 first: {running:?}"
    );
    assert_eq!(count(&running, "READY=1"), 1, "{running:?}");
    assert!(has_status(&running), "no STATUS= line: {running:?}");
    assert!(
        running.iter().all(|n| n.lines().all(|l| l.contains('='))),
        "malformed notification: {running:?}"
    );

    server.terminate();
    systemd.receive_until(|n| count(n, "STOPPING=1") == 1);
    let status = server.exit_status();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn ready_and_stopping_on_an_abstract_socket() {
    let (systemd, notify_socket) = Systemd::abstract_name("notify");
    let mut command = signalbox();
    command.env("NOTIFY_SOCKET", &notify_socket);
    let mut server = Server::start(command);

    let running = systemd.receive_until(|n| count(n, "READY=1") == 1);
    assert!(has_status(&running), "no STATUS= line: {running:?}");

    server.terminate();
    let stopping = systemd.receive_until(|n| count(n, "STOPPING=1") == 1);
    assert_eq!(
        count(&stopping, "WATCHDOG=1"),
        0,
        "no watchdog was asked for"
    );
    let status = server.exit_status();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn serves_on_a_socket_passed_by_socket_activation() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    // The listener goes in as stdin; the shell moves it to fd 3, where
    // systemd puts the first socket, and sets LISTEN_PID to its own pid,
    // which signalbox keeps through exec.
    let mut command = Command::new("/bin/sh");
    command
        .env_clear()
        .env("SIGNALBOX_LOG_LEVEL", "info")
        .env("LISTEN_FDS", "1")
        .args([
            "-c",
            "exec 3<&0 0</dev/null; LISTEN_PID=$$ exec \"$0\" \"$@\"",
            BIN,
            // What it would listen on without the passed socket.
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::from(OwnedFd::from(listener)));
    let mut server = Server::start(command);

    let listening = server.log_line("listening on");
    assert!(
        listening.ends_with(&format!("listening on http://{addr}")),
        "{listening:?}, expected the passed socket {addr}"
    );
    let reply = common::get(addr, "/");
    assert_eq!(reply.status, 200, "{reply:?}");
    let health: serde_json::Value = serde_json::from_str(&reply.body).expect("health JSON");
    assert_eq!(health["status"], "WebRTC Signaling Server Running");
    assert_eq!(health["connectedUsers"], 0);
    assert_eq!(health["activeCalls"], 0);

    server.terminate();
    let status = server.exit_status();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
