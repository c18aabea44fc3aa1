//! A door station's `open_command`, run by signalbox itself: no shell,
//! the arguments as the directory gives them, a clean environment, a
//! timeout after which it is killed, and never two at once for one door
//! (an `open_door` while it runs waits for that run's result).

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use smol::Timer;

use super::hub::{DoorAttempt, DoorResult};

/// The `PATH` the command gets: the environment is not passed on (it may
/// name secrets), and programs are named by absolute path anyway.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much longer than a station's command may run an `open_door` asked
/// of its node waits for the answer.
pub const ASK_GRACE: Duration = Duration::from_secs(5);

/// A door: its station and its name.
type DoorName = (Rc<str>, Rc<str>);

/// The doors whose command runs now, each with who waits for its result.
#[derive(Default)]
pub struct DoorCommands<W> {
    running: RefCell<HashMap<DoorName, Vec<(DoorAttempt, W)>>>,
}

impl<W> DoorCommands<W> {
    /// `attempt` waits for its door's command, with `waiter`: whether it
    /// is the first, and must run it (else a run is under way).
    pub fn wait(&self, attempt: DoorAttempt, waiter: W) -> bool {
        let key = (attempt.station.clone(), attempt.door.clone());
        let mut running = self.running.borrow_mut();
        let waiting = running.entry(key).or_default();
        waiting.push((attempt, waiter));
        waiting.len() == 1
    }

    /// The run for `attempt`'s door is over: everyone who waited for it.
    pub fn finished(&self, attempt: &DoorAttempt) -> Vec<(DoorAttempt, W)> {
        let key = (attempt.station.clone(), attempt.door.clone());
        self.running.borrow_mut().remove(&key).unwrap_or_default()
    }
}

/// Who asked to open a door, and the door.
type Asked = (Rc<str>, DoorName);

/// Several nodes: the `open_door`s whose station's node was asked to open
/// the door, each with who waits for its answer, in order, under a number.
pub struct DoorAsks<W> {
    asked: RefCell<HashMap<Asked, Vec<(u64, W)>>>,
    next: std::cell::Cell<u64>,
}

impl<W> Default for DoorAsks<W> {
    fn default() -> DoorAsks<W> {
        DoorAsks {
            asked: RefCell::default(),
            next: std::cell::Cell::new(0),
        }
    }
}

impl<W> DoorAsks<W> {
    /// `attempt` was asked of its station's node, and `waiter` waits for
    /// the answer: its number.
    pub fn ask(&self, attempt: &DoorAttempt, waiter: W) -> u64 {
        let number = self.next.get();
        self.next.set(number + 1);
        let key = (
            attempt.by.clone(),
            (attempt.station.clone(), attempt.door.clone()),
        );
        self.asked
            .borrow_mut()
            .entry(key)
            .or_default()
            .push((number, waiter));
        number
    }

    /// The answer for `by`'s attempt on `station`'s `door` came: who waited
    /// first for one.
    pub fn answered(&self, by: &Rc<str>, station: &Rc<str>, door: &Rc<str>) -> Option<W> {
        self.take_where(asked(by, station, door), |_| true)
    }

    /// Attempt `number` ends without an answer (nobody took it, or it
    /// came too late): who waits for it, unless it was answered.
    pub fn give_up(&self, attempt: &DoorAttempt, number: u64) -> Option<W> {
        let key = (
            attempt.by.clone(),
            (attempt.station.clone(), attempt.door.clone()),
        );
        self.take_where(key, |n| n == number)
    }

    fn take_where(&self, key: Asked, which: impl Fn(u64) -> bool) -> Option<W> {
        let mut asked = self.asked.borrow_mut();
        let waiting = asked.get_mut(&key)?;
        let at = waiting.iter().position(|(n, _)| which(*n))?;
        let (_, waiter) = waiting.remove(at);
        if waiting.is_empty() {
            asked.remove(&key);
        }
        Some(waiter)
    }

    /// How many wait.
    pub fn waiting(&self) -> usize {
        self.asked.borrow().values().map(Vec::len).sum()
    }
}

fn asked(by: &Rc<str>, station: &Rc<str>, door: &Rc<str>) -> Asked {
    (by.clone(), (station.clone(), door.clone()))
}

/// Runs `command` for `attempt`, killing it after `timeout`. It learns
/// what it opens from `SIGNALBOX_STATION`, `SIGNALBOX_DOOR` and
/// `SIGNALBOX_OPENED_BY`; its standard error goes to the log.
pub async fn run(command: &[String], attempt: &DoorAttempt, timeout: Duration) -> DoorResult {
    let Some((program, args)) = command.split_first() else {
        return DoorResult::Failed(None, "no command".to_owned());
    };
    let mut command = std::process::Command::new(program);
    // Its own process group, so that a timeout kills whatever it started
    // too (a shell script's `sleep`, a relay tool it runs).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let spawned = smol::process::Command::from(command)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("SIGNALBOX_STATION", &*attempt.station)
        .env("SIGNALBOX_DOOR", &*attempt.door)
        .env("SIGNALBOX_OPENED_BY", &*attempt.by)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return DoorResult::Failed(None, format!("cannot start {program}: {error}")),
    };
    let status = futures_lite::future::or(async { Some(child.status().await) }, async {
        Timer::after(timeout).await;
        None
    })
    .await;
    match status {
        None => {
            let group = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            // Reaped, so that no zombie is left.
            let _ = child.status().await;
            DoorResult::TimedOut(timeout)
        }
        Some(Ok(status)) if status.success() => DoorResult::Opened(Some(0)),
        Some(Ok(status)) => match status.code() {
            Some(code) => DoorResult::Failed(Some(code), format!("command exited {code}")),
            None => DoorResult::Failed(None, "command killed by a signal".to_owned()),
        },
        Some(Err(error)) => DoorResult::Failed(None, format!("command: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt(door: &str) -> DoorAttempt {
        DoorAttempt {
            by: "anna".into(),
            station: "front-door".into(),
            door: door.into(),
            call: None,
            remote: false,
        }
    }

    #[test]
    fn answers_from_other_nodes_reach_who_asked_first() {
        let asks = DoorAsks::default();
        let first = asks.ask(&attempt("main"), "first");
        let second = asks.ask(&attempt("main"), "second");
        let garage = asks.ask(&attempt("garage"), "garage");
        let (by, station) = (Rc::from("anna"), Rc::from("front-door"));
        assert_eq!(asks.answered(&by, &station, &"main".into()), Some("first"));
        assert_eq!(
            asks.give_up(&attempt("main"), first),
            None,
            "answered already"
        );
        assert_eq!(asks.give_up(&attempt("garage"), garage), Some("garage"));
        assert_eq!(asks.waiting(), 1);
        assert_eq!(asks.give_up(&attempt("main"), second), Some("second"));
        assert_eq!(asks.answered(&by, &station, &"main".into()), None);
        assert_eq!(asks.waiting(), 0);
    }

    #[test]
    fn one_run_at_a_time_per_door() {
        let doors = DoorCommands::default();
        assert!(doors.wait(attempt("main"), 1));
        assert!(!doors.wait(attempt("main"), 2), "waits for the run");
        assert!(doors.wait(attempt("garage"), 3), "another door runs");
        let waited: Vec<i32> = doors
            .finished(&attempt("main"))
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(waited, [1, 2]);
        assert!(doors.wait(attempt("main"), 4), "the next runs again");
    }

    #[test]
    fn commands_run_without_a_shell_and_are_killed_on_time() {
        let run = |command: &[&str], timeout| {
            let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
            crate::rt::block_on(run(&command, &attempt("main"), timeout))
        };
        let second = Duration::from_secs(1);
        assert_eq!(run(&["/bin/true"], second), DoorResult::Opened(Some(0)));
        assert_eq!(
            run(&["/bin/sh", "-c", "exit 3"], second),
            DoorResult::Failed(Some(3), "command exited 3".into())
        );
        // The environment is the door's, not the server's.
        assert_eq!(
            run(
                &[
                    "/bin/sh",
                    "-c",
                    "test \"$SIGNALBOX_DOOR\" = main -a -z \"$HOME\""
                ],
                second
            ),
            DoorResult::Opened(Some(0))
        );
        let short = Duration::from_millis(100);
        assert_eq!(
            run(&["/bin/sleep", "5"], short),
            DoorResult::TimedOut(short)
        );
        // What it started goes with it: no relay fires after the ack.
        let dir = std::env::temp_dir().join(format!("signalbox-door-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        assert_eq!(
            run(&["/bin/sh", "-c", &script], short),
            DoorResult::TimedOut(short)
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .map_or(true, |stat| stat.contains(") Z "))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(gone(), "the command's own child was killed too");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            run(&["/nonexistent/relay"], second),
            DoorResult::Failed(None, why) if why.contains("cannot start")
        ));
        assert_eq!(
            DoorResult::Failed(Some(3), "command exited 3".into()).ack(),
            json!({"ok": false, "error": "the door's command failed: command exited 3", "exitStatus": 3})
        );
    }
}
