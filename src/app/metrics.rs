//! The metrics page: Prometheus text exposition of the intercom's figures,
//! and the process figures every exporter shows.

use std::fmt::Write;

/// Builds a Prometheus text-format page.
#[derive(Debug, Default)]
pub struct Page {
    text: String,
}

impl Page {
    /// Starts a metric family with its help text and type (`gauge`, `counter`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// Adds a sample; `labels` is empty or like `transport="polling"`.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) -> &mut Self {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, "", value)
    }

    /// Adds the process's resident memory and open file descriptors.
    pub fn process(&mut self) -> &mut Self {
        if let Some(rss) = resident_memory_bytes() {
            self.single(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss,
            );
        }
        if let Some(fds) = open_fds() {
            self.single(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                fds,
            );
        }
        self
    }

    /// The page's text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

impl super::Intercom {
    /// The Prometheus metrics page.
    pub fn metrics(&self) -> String {
        let hub = self.signaling.hub();
        let engine = self.engine.stats();
        let events = self.io.stats();
        let totals = hub.totals();
        let ringing = hub.ringing_count();
        let mut page = Page::default();
        page.single(
            "signalbox_connected_users",
            "gauge",
            "Users registered now.",
            hub.user_count(),
        )
        .family(
            "signalbox_sessions",
            "gauge",
            "Engine.IO sessions open now, by transport.",
        )
        .sample(
            "signalbox_sessions",
            r#"transport="polling""#,
            engine.polling,
        )
        .sample(
            "signalbox_sessions",
            r#"transport="websocket""#,
            engine.websocket,
        )
        .family("signalbox_calls", "gauge", "Calls in progress, by state.")
        .sample("signalbox_calls", r#"state="ringing""#, ringing)
        .sample(
            "signalbox_calls",
            r#"state="active""#,
            hub.call_count() - ringing,
        )
        .family(
            "signalbox_calls_total",
            "counter",
            "Calls since start, by outcome.",
        );
        for (outcome, count) in [
            ("answered", totals.answered),
            ("declined", totals.declined),
            ("timeout", totals.timeout),
            ("busy", totals.busy),
            ("failed", totals.failed),
        ] {
            page.sample(
                "signalbox_calls_total",
                &format!(r#"outcome="{outcome}""#),
                count,
            );
        }
        page.family(
            "signalbox_door_opens_total",
            "counter",
            "Attempts to open a door since start, by door station, door and result (station and door empty: no such door).",
        );
        let doors = hub.door_totals();
        let count = |station: &str, door: &str, result: &str| {
            doors
                .iter()
                .find(|((s, d, r), _)| &**s == station && &**d == door && *r == result)
                .map_or(0, |(_, count)| *count)
        };
        let directory = hub.directory().clone();
        let mut known: Vec<(&str, &str)> = directory
            .stations()
            .into_iter()
            .flat_map(|(station, spec)| spec.doors.iter().map(move |door| (&**station, &**door)))
            .collect();
        if doors.iter().any(|((station, ..), _)| station.is_empty()) {
            known.push(("", ""));
        }
        for (station, door) in known {
            for result in ["opened", "refused", "failed", "timeout"] {
                page.sample(
                    "signalbox_door_opens_total",
                    &format!(r#"station="{station}",door="{door}",result="{result}""#),
                    count(station, door, result),
                );
            }
        }
        let pushes = self.signaling.push_totals();
        page.single(
            "signalbox_push_subscriptions",
            "gauge",
            "Web Push subscriptions kept.",
            hub.subscription_count(),
        )
        .family(
            "signalbox_pushes_total",
            "counter",
            "Web Push messages since start, by what became of them.",
        );
        for (result, count) in [
            ("sent", pushes.sent),
            ("gone", pushes.gone),
            ("failed", pushes.failed),
            ("dropped", pushes.dropped),
        ] {
            page.sample(
                "signalbox_pushes_total",
                &format!(r#"result="{result}""#),
                count,
            );
        }
        let logged = self
            .signaling
            .call_log()
            .map(|log| log.totals())
            .unwrap_or_default();
        page.family(
            "signalbox_call_log_records_total",
            "counter",
            "Call records since start: written and synced, or lost.",
        )
        .sample(
            "signalbox_call_log_records_total",
            r#"result="written""#,
            logged.written,
        )
        .sample(
            "signalbox_call_log_records_total",
            r#"result="dropped""#,
            logged.dropped,
        );
        let graces = hub.grace_totals();
        page.single(
            "signalbox_held_users",
            "gauge",
            "Users whose connection was lost, held registered for the reconnect grace.",
            hub.held_count(),
        )
        .single(
            "signalbox_held_events",
            "gauge",
            "Events kept for held users, to deliver when they are back.",
            hub.held_events(),
        )
        .family(
            "signalbox_reconnect_graces_total",
            "counter",
            "Reconnect graces since start, by how they ended.",
        )
        .sample(
            "signalbox_reconnect_graces_total",
            r#"outcome="resumed""#,
            graces.resumed,
        )
        .sample(
            "signalbox_reconnect_graces_total",
            r#"outcome="lapsed""#,
            graces.lapsed,
        )
        .single(
            "signalbox_recovery_sockets_away",
            "gauge",
            "Sockets whose connection was lost, kept for Socket.IO connection state recovery.",
            events.away,
        )
        .single(
            "signalbox_recovery_kept_bytes",
            "gauge",
            "Bytes of events kept for connection state recovery.",
            events.kept_bytes,
        )
        .single(
            "signalbox_recovered_sockets_total",
            "counter",
            "Sockets recovered by their client since start.",
            events.recovered,
        );
        page.single(
            "signalbox_events_received_total",
            "counter",
            "Socket.IO events received from clients.",
            events.events_received,
        )
        .single(
            "signalbox_events_sent_total",
            "counter",
            "Socket.IO events sent to clients.",
            events.events_sent,
        )
        .single(
            "signalbox_bytes_received_total",
            "counter",
            "Engine.IO payload bytes received.",
            engine.bytes_received,
        )
        .single(
            "signalbox_bytes_sent_total",
            "counter",
            "Engine.IO payload bytes sent.",
            engine.bytes_sent,
        )
        .single(
            "signalbox_bytes_pending",
            "gauge",
            "Bytes queued for clients, or waiting for the rest of their message, now.",
            engine.bytes_pending,
        );
        if let Some(cluster) = self.cluster() {
            let stats = cluster.stats();
            page.single(
                "signalbox_cluster_up",
                "gauge",
                "1 while this node is subscribed to its Redis channel.",
                u64::from(stats.up),
            )
            .single(
                "signalbox_cluster_commands_total",
                "counter",
                "Commands sent to Redis.",
                stats.sent,
            )
            .single(
                "signalbox_cluster_messages_received_total",
                "counter",
                "Messages received from other nodes.",
                stats.received,
            )
            .single(
                "signalbox_cluster_failed_batches_total",
                "counter",
                "Batches of commands Redis did not answer.",
                stats.failed_batches,
            )
            .single(
                "signalbox_cluster_dropped_messages_total",
                "counter",
                "Messages for other nodes dropped while Redis lagged.",
                stats.dropped,
            );
        }
        page.family("signalbox_build_info", "gauge", "The running version.")
            .sample(
                "signalbox_build_info",
                &format!(r#"version="{}""#, env!("CARGO_PKG_VERSION")),
                1,
            )
            .process();
        page.finish()
    }
}

/// This process's resident set size, from `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many file descriptors this process has open.
pub fn open_fds() -> Option<usize> {
    // The directory listing itself holds one descriptor while it runs.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let mut page = Page::default();
        page.family("x_sessions", "gauge", "Sessions.")
            .sample("x_sessions", r#"transport="polling""#, 2)
            .single("x_total", "counter", "Things.", 7);
        assert_eq!(
            page.finish(),
            "# HELP x_sessions Sessions.\n# TYPE x_sessions gauge\nx_sessions{transport=\"polling\"} 2\n\
             # HELP x_total Things.\n# TYPE x_total counter\nx_total 7\n"
        );
    }

    #[test]
    fn reads_process_figures() {
        assert!(resident_memory_bytes().unwrap() > 0);
        assert!(open_fds().unwrap() >= 3);
    }
}
