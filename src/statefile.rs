//! What must outlive a restart besides the call log (push subscriptions,
//! missed calls): one JSON file in the state directory, replaced whole and
//! atomically (written beside it, synced, renamed over it), so that a
//! power cut leaves the old file or the new one, never half of either.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file's name in the state directory.
pub const FILE: &str = "state.json";

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The file's text; `None` when there is none yet.
pub fn load(dir: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path(dir)) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Replaces the file with `text`: a power cut at any point leaves the old
/// file or the new one.
pub fn save(dir: &Path, text: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let target = path(dir);
    let partial = dir.join(format!("{FILE}.new"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, &target)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("signalbox-state-{}", crate::id::random()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        save(&dir, b"{\"a\":1}").unwrap();
        save(&dir, b"{\"b\":2}").unwrap();
        assert_eq!(load(&dir).unwrap().as_deref(), Some("{\"b\":2}"));
        assert!(!dir.join("state.json.new").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
