//! A door station's `open_command`, run by signalbox itself: no shell,
//! the arguments as the directory gives them, a clean environment, a
//! timeout after which it is killed, and never two at once for one door
//! (an `open_door` while it runs waits for that run's result).

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use smol::Timer;

use super::hub::{DoorAttempt, DoorResult};

/// The `PATH` the command gets: the environment is not passed on (it may
/// name secrets), and programs are named by absolute path anyway.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// Runs `command` for `attempt`, killing it after `timeout`. It learns
/// what it opens from `SIGNALBOX_STATION`, `SIGNALBOX_DOOR` and
/// `SIGNALBOX_OPENED_BY`; its standard error goes to the log.
pub async fn run(command: &[String], attempt: &DoorAttempt, timeout: Duration) -> DoorResult {
    let Some((program, args)) = command.split_first() else {
        return DoorResult::Failed(None, "no command".to_owned());
    };
    let spawned = smol::process::Command::new(program)
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

/// The ack of an `open_door` that ran a command (or waited for one).
pub fn reply(result: &DoorResult) -> Value {
    match result {
        DoorResult::Opened(None) => json!({ "ok": true }),
        DoorResult::Opened(Some(status)) => json!({ "ok": true, "exitStatus": status }),
        DoorResult::Refused(error) => json!({ "ok": false, "error": error.to_string() }),
        DoorResult::Failed(status, why) => {
            let mut reply =
                json!({ "ok": false, "error": format!("the door's command failed: {why}") });
            if let Some(status) = status {
                reply["exitStatus"] = json!(status);
            }
            reply
        }
        DoorResult::TimedOut(after) => json!({
            "ok": false,
            "error": format!("the door's command did not finish within {after:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(door: &str) -> DoorAttempt {
        DoorAttempt {
            by: "anna".into(),
            station: "front-door".into(),
            door: door.into(),
            call: None,
        }
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
        assert!(matches!(
            run(&["/nonexistent/relay"], second),
            DoorResult::Failed(None, why) if why.contains("cannot start")
        ));
        assert_eq!(
            reply(&DoorResult::Failed(Some(3), "command exited 3".into())),
            json!({"ok": false, "error": "the door's command failed: command exited 3", "exitStatus": 3})
        );
    }
}
