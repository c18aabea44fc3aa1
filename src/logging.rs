//! A small logger on stderr: one line per record. Under systemd (when
//! `JOURNAL_STREAM` is set) each line starts with its syslog priority, `<6>`
//! and the like, and carries no timestamp, since the journal adds its own.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr {
    journal: bool,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journal {
            format!("<{}>{}\n", priority(record.level()), record.args())
        } else {
            format!(
                "{} {:<5} {}\n",
                crate::timestamp::now(),
                record.level(),
                record.args()
            )
        };
        // One write per line, so lines from a dying process stay whole.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The syslog priority of a level, as sd-daemon(3) prefixes use.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Sends log records at `level` and above to stderr. Calling it again only
/// changes the level.
pub fn init(level: LevelFilter) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let logger: &'static Stderr = Box::leak(Box::new(Stderr { journal }));
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

/// Parses a level name: `off`, `error`, `warn`, `info`, `debug`, `trace`.
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse().map_err(|_| {
        format!("invalid log level {text:?}: expected off, error, warn, info, debug or trace")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
    }

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("OFF"), Ok(LevelFilter::Off));
        assert!(parse_level("loud").is_err());
    }
}
