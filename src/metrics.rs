//! Prometheus text exposition, and the process figures every exporter shows.

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
