//! A small logger on stderr: one line per record. Under systemd (when
//! `JOURNAL_STREAM` is set) each line starts with its syslog priority, `<6>`
//! and the like, and carries no timestamp, since the journal adds its own.
//!
//! Values from the network go into log lines through [`untrusted`], which
//! escapes what could forge a line and cuts what could flood the log; the
//! logger escapes control characters once more, whatever a call site did.

use std::fmt;
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
        let message = one_line(record.args().to_string());
        let line = if self.journal {
            format!("<{}>{message}\n", priority(record.level()))
        } else {
            format!(
                "{} {:<5} {message}\n",
                crate::timestamp::now(),
                record.level(),
            )
        };
        // One write per line, so lines from a dying process stay whole.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The longest log message, in bytes: a record longer than this is cut.
pub const MAX_MESSAGE: usize = 4096;

/// How many characters of a value from the network a log line shows.
pub const MAX_VALUE_CHARS: usize = 80;

/// `message` as one line: control characters escaped, at most
/// [`MAX_MESSAGE`] bytes.
fn one_line(message: String) -> String {
    let needs_escape = message.chars().any(needs_escape);
    let mut line = if needs_escape {
        let mut line = String::with_capacity(message.len() + 16);
        for c in message.chars() {
            push_escaped(&mut line, c);
        }
        line
    } else {
        message
    };
    if line.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("…(cut)");
    }
    line
}

/// Whether `c` could break a log line or hide what it says: control
/// characters, and the invisible or reordering ones (zero-width, bidi
/// overrides, line and paragraph separators, byte-order marks).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            use fmt::Write as _;
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// A value from the network (a name, an event name, a reason, a user
/// agent), shown in a log line: backslashes, control characters and the
/// invisible or direction-changing ones (zero-width, line and paragraph
/// separators, bidi controls) escaped, at most [`MAX_VALUE_CHARS`]
/// characters, the cut marked with the value's full length.
///
/// ```
/// use signalbox::logging::untrusted;
/// let forged = "x\n2026-01-01T00:00:00.000Z INFO  admin registered";
/// assert_eq!(untrusted(forged).to_string(), "x\\n2026-01-01T00:00:00.000Z INFO  admin registered");
/// let long = "a".repeat(900_000);
/// assert_eq!(untrusted(&long).to_string(), format!("{}…(900000 bytes)", "a".repeat(80)));
/// ```
pub fn untrusted(value: &str) -> Untrusted<'_> {
    Untrusted(value)
}

/// See [`untrusted`].
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(&'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = String::new();
        for (count, c) in self.0.chars().enumerate() {
            if count == MAX_VALUE_CHARS {
                shown.push_str(&format!("…({} bytes)", self.0.len()));
                break;
            }
            if c == '\\' {
                shown.push_str("\\\\");
            } else {
                push_escaped(&mut shown, c);
            }
        }
        f.write_str(&shown)
    }
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
    fn network_values_cannot_forge_or_flood_a_line() {
        let cases = [
            ("alice", "alice"),
            ("a\nb", "a\\nb"),
            ("a\r\nb", "a\\r\\nb"),
            ("tab\there", "tab\\there"),
            ("esc\u{1b}[31m", "esc\\u{1b}[31m"),
            ("nul\0", "nul\\u{0}"),
            ("bidi\u{202e}txt", "bidi\\u{202e}txt"),
            ("sep\u{2028}x", "sep\\u{2028}x"),
            ("zw\u{200b}x", "zw\\u{200b}x"),
            ("back\\slash", "back\\\\slash"),
            ("ünïcode €", "ünïcode €"),
        ];
        for (value, shown) in cases {
            assert_eq!(untrusted(value).to_string(), shown, "{value:?}");
        }
        let long = "é".repeat(100);
        let shown = untrusted(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(MAX_VALUE_CHARS)));
        assert!(shown.ends_with("…(200 bytes)"), "{shown}");
        assert_eq!(
            untrusted(&"x".repeat(MAX_VALUE_CHARS)).to_string().len(),
            MAX_VALUE_CHARS
        );
    }

    #[test]
    fn the_logger_keeps_every_record_on_one_bounded_line() {
        assert_eq!(one_line("plain".into()), "plain");
        assert_eq!(one_line("two\nlines".into()), "two\\nlines");
        let long = one_line("y".repeat(10 * MAX_MESSAGE));
        assert!(long.len() <= MAX_MESSAGE + 10 && long.ends_with("…(cut)"));
        assert!(!one_line("€".repeat(MAX_MESSAGE)).contains('\n'));
    }

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("OFF"), Ok(LevelFilter::Off));
        assert!(parse_level("loud").is_err());
    }
}
