//! The durable call log: one JSON line per call in `<state-dir>/calls.log`,
//! appended and synced as each call ends, so that a power cut loses at
//! most the call in progress and never corrupts what was written. The log
//! rotates by size (`calls.log.1`, … up to [`KEEP`] files); at start, a
//! torn last line (the power went mid-write) is cut off with a warning.
//!
//! Writing and syncing a file can take tens of milliseconds on an SD card:
//! it happens on a thread of its own ([`smol::unblock`]), one batch at a
//! time, never on the event loop. What waits for it is bounded: past
//! [`MAX_QUEUED`] lines, records are dropped and counted.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The log's file name in the state directory.
pub const FILE: &str = "calls.log";

/// The size past which the log rotates.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// How many files are kept: the current one and `KEEP - 1` rotated ones.
pub const KEEP: usize = 5;

/// The most lines waiting to be written.
pub const MAX_QUEUED: usize = 10_000;

/// Where the log's files are, and how big they may grow.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
}

impl Files {
    /// The log in `dir`, rotating at `max_bytes`, keeping `keep` files.
    pub fn new(dir: &Path, max_bytes: u64, keep: usize) -> Files {
        Files {
            dir: dir.to_owned(),
            max_bytes,
            keep: keep.max(1),
        }
    }

    /// The current file, or the `n`th rotated one (`calls.log.n`).
    pub fn path(&self, n: usize) -> PathBuf {
        match n {
            0 => self.dir.join(FILE),
            n => self.dir.join(format!("{FILE}.{n}")),
        }
    }

    /// Opens the current file for appending, first cutting off a torn
    /// last line (with a warning); returns it and its size.
    pub fn open(&self) -> io::Result<(File, u64)> {
        let path = self.path(0);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let whole = complete_prefix(&bytes);
        if whole < bytes.len() {
            log::warn!(
                "call log {}: the last line was torn ({} bytes, no newline: a power cut mid-write?); cut off",
                path.display(),
                bytes.len() - whole
            );
            file.set_len(whole as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok((file, whole as u64))
    }

    /// Shifts the files by one (the oldest goes) and opens a new current one.
    fn rotate(&self) -> io::Result<(File, u64)> {
        for n in (1..self.keep).rev() {
            let from = self.path(n - 1);
            if from.exists() {
                std::fs::rename(&from, self.path(n))?;
            }
        }
        if self.keep == 1 {
            std::fs::remove_file(self.path(0))?;
        }
        if let Ok(dir) = File::open(&self.dir) {
            // The renames are durable before new lines go to a new file.
            let _ = dir.sync_all();
        }
        self.open()
    }

    /// Appends `lines` (each ending in a newline) to `file`, syncs, and
    /// rotates first when the file has grown past the limit.
    pub fn append(&self, file: &mut File, size: &mut u64, lines: &[u8]) -> io::Result<()> {
        if *size > 0 && *size + lines.len() as u64 > self.max_bytes {
            let (new, new_size) = self.rotate()?;
            *file = new;
            *size = new_size;
        }
        file.write_all(lines)?;
        file.sync_data()?;
        *size += lines.len() as u64;
        Ok(())
    }

    /// Every complete line of every file, newest file first, each file's
    /// lines in order (a torn last line is left out).
    pub fn read_all(&self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        for n in 0..self.keep {
            let bytes = match std::fs::read(self.path(n)) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let whole = &bytes[..complete_prefix(&bytes)];
            let text = String::from_utf8_lossy(whole);
            let mut file_lines: Vec<String> = text.lines().map(str::to_owned).collect();
            file_lines.reverse();
            lines.extend(file_lines);
        }
        Ok(lines)
    }
}

/// How many bytes of `bytes` are whole lines: up to its last newline.
pub fn complete_prefix(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1)
}

/// Counts for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogTotals {
    /// Records written and synced.
    pub written: u64,
    /// Records lost: the queue was full, or a write failed.
    pub dropped: u64,
}

struct Writer {
    files: Files,
    /// Lines waiting, and whether a batch is being written.
    queue: RefCell<Vec<u8>>,
    queued: Cell<usize>,
    busy: Cell<bool>,
    file: RefCell<Option<(File, u64)>>,
    totals: Cell<LogTotals>,
    /// Told each time a batch is done.
    written: crate::rt::Notify,
}

/// Appends records to the log from the event loop; the writes and syncs
/// happen on a blocking thread, a batch at a time.
#[derive(Clone)]
pub struct CallLog(Rc<Writer>);

impl CallLog {
    /// Opens (or creates) the log in `files`' directory.
    pub fn open(files: Files) -> io::Result<CallLog> {
        std::fs::create_dir_all(&files.dir)?;
        let file = files.open()?;
        Ok(CallLog(Rc::new(Writer {
            files,
            queue: RefCell::new(Vec::new()),
            queued: Cell::new(0),
            busy: Cell::new(false),
            file: RefCell::new(Some(file)),
            totals: Cell::new(LogTotals::default()),
            written: crate::rt::Notify::default(),
        })))
    }

    /// Where it writes.
    pub fn files(&self) -> &Files {
        &self.0.files
    }

    /// What was written and lost since start.
    pub fn totals(&self) -> LogTotals {
        self.0.totals.get()
    }

    fn count(&self, add: impl FnOnce(&mut LogTotals)) {
        let mut totals = self.0.totals.get();
        add(&mut totals);
        self.0.totals.set(totals);
    }

    /// Queues `record` as one line.
    pub fn append<T: serde::Serialize>(&self, record: &T) {
        if self.0.queued.get() >= MAX_QUEUED {
            self.count(|t| t.dropped += 1);
            return;
        }
        let mut queue = self.0.queue.borrow_mut();
        if serde_json::to_writer(&mut *queue, record).is_err() {
            return;
        }
        queue.push(b'\n');
        self.0.queued.set(self.0.queued.get() + 1);
        drop(queue);
        self.flush();
    }

    /// Writes what is queued, unless a batch is being written (its end
    /// writes the rest).
    fn flush(&self) {
        if self.0.busy.get() || self.0.queued.get() == 0 {
            return;
        }
        let Some((mut file, mut size)) = self.0.file.borrow_mut().take() else {
            return;
        };
        let lines = std::mem::take(&mut *self.0.queue.borrow_mut());
        let count = self.0.queued.replace(0);
        self.0.busy.set(true);
        let log = self.clone();
        let files = self.0.files.clone();
        crate::rt::spawn(async move {
            let (result, file, size) = smol::unblock(move || {
                let result = files.append(&mut file, &mut size, &lines);
                (result, file, size)
            })
            .await;
            match result {
                Ok(()) => log.count(|t| t.written += count as u64),
                Err(error) => {
                    log.count(|t| t.dropped += count as u64);
                    log::warn!("call log: {count} records not written: {error}");
                }
            }
            *log.0.file.borrow_mut() = Some((file, size));
            log.0.busy.set(false);
            log.flush();
            log.0.written.notify();
        })
        .detach();
    }

    /// Waits until everything queued so far is written (for shutdown and
    /// tests), for at most `limit`.
    pub async fn settle(&self, limit: std::time::Duration) {
        let idle = self
            .0
            .written
            .until(|| !self.0.busy.get() && self.0.queued.get() == 0);
        futures_lite::future::or(idle, async {
            smol::Timer::after(limit).await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("signalbox-calllog-{name}-{}", crate::id::random()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn whole_lines_end_at_the_last_newline() {
        assert_eq!(complete_prefix(b""), 0);
        assert_eq!(complete_prefix(b"{\"a\":1}"), 0);
        assert_eq!(complete_prefix(b"{\"a\":1}\n"), 8);
        assert_eq!(complete_prefix(b"{\"a\":1}\n{\"b\""), 8);
    }

    #[test]
    fn records_are_appended_synced_and_read_back_newest_file_first() {
        crate::rt::block_on(async {
            let dir = scratch("append");
            let log = CallLog::open(Files::new(&dir, MAX_FILE_BYTES, KEEP)).unwrap();
            for n in 0..3 {
                log.append(&serde_json::json!({ "call": n }));
            }
            log.settle(std::time::Duration::from_secs(5)).await;
            let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
            assert_eq!(text, "{\"call\":0}\n{\"call\":1}\n{\"call\":2}\n");
            assert_eq!(
                log.totals(),
                LogTotals {
                    written: 3,
                    dropped: 0
                }
            );
            std::fs::remove_dir_all(dir).unwrap();
        });
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = scratch("rotate");
        let files = Files::new(&dir, 100, 3);
        let (mut file, mut size) = files.open().unwrap();
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(30)); // 41 bytes
        for _ in 0..12 {
            files.append(&mut file, &mut size, line.as_bytes()).unwrap();
        }
        let sizes: Vec<u64> = (0..4)
            .map(|n| std::fs::metadata(files.path(n)).map_or(0, |m| m.len()))
            .collect();
        // Two lines a file; three files kept, the fourth never made.
        assert_eq!(sizes, [82, 82, 82, 0]);
        assert_eq!(files.read_all().unwrap().len(), 6);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_off_at_start_and_never_read() {
        let dir = scratch("torn");
        let files = Files::new(&dir, MAX_FILE_BYTES, KEEP);
        std::fs::write(files.path(0), b"{\"call\":1}\n{\"call\":2}\n{\"ca").unwrap();
        assert_eq!(files.read_all().unwrap(), ["{\"call\":2}", "{\"call\":1}"]);
        let (mut file, mut size) = files.open().unwrap();
        assert_eq!(size, 22);
        files
            .append(&mut file, &mut size, b"{\"call\":3}\n")
            .unwrap();
        let text = std::fs::read_to_string(files.path(0)).unwrap();
        assert_eq!(text, "{\"call\":1}\n{\"call\":2}\n{\"call\":3}\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
