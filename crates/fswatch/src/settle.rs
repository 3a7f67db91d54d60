//! The settle rule and content fingerprints.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

use crate::fsread::{read_regular_file, FileReadError};

/// A hash of `files` (their paths and contents, each read through
/// [`read_regular_file`] with the limit `max`). A file that cannot be read contributes its
/// error, so a file that appears, vanishes or changes kind is a change too.
pub fn fingerprint<'a>(files: impl IntoIterator<Item = &'a Path>, max: u64) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        hash_read(&read_regular_file(f, max), &mut h);
    }
    h.finish()
}

/// Reads one file as [`fingerprint`] would and returns its fingerprint with what was read, so
/// that a watcher of one file reads it once per poll.
pub fn read_fingerprinted(path: &Path, max: u64) -> (u64, Result<Vec<u8>, FileReadError>) {
    let read = read_regular_file(path, max);
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    hash_read(&read, &mut h);
    (h.finish(), read)
}

fn hash_read(read: &Result<Vec<u8>, FileReadError>, h: &mut DefaultHasher) {
    match read {
        Ok(bytes) => bytes.hash(h),
        Err(e) => e.to_string().hash(h),
    }
}

/// Decides, poll by poll, when a changed fingerprint is to be loaded: only when the poll
/// before saw the same one. A writer that truncates then writes is caught at most once in
/// between; loading that would drop everything the file held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settle {
    loaded: u64,
    pending: Option<u64>,
}

impl Settle {
    /// Starts from the version `loaded` (the fingerprint of what is in force).
    pub fn new(loaded: u64) -> Self {
        Settle {
            loaded,
            pending: None,
        }
    }

    /// Takes this poll's fingerprint; `true` when it is a change that has settled: the caller
    /// loads it now (whether the load succeeds or not, it counts as tried, so a bad version is
    /// reported once).
    pub fn poll(&mut self, now: u64) -> bool {
        if now == self.loaded {
            // Back to what is in force (or never left): nothing pending.
            self.pending = None;
            return false;
        }
        if self.pending != Some(now) {
            self.pending = Some(now);
            return false;
        }
        self.pending = None;
        self.loaded = now;
        true
    }

    /// Records that `now` was loaded outside the polls (an explicit reload).
    pub fn loaded(&mut self, now: u64) {
        self.loaded = now;
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_loaded_on_the_second_poll_that_sees_it() {
        let mut s = Settle::new(1);
        assert!(!s.poll(1));
        assert!(!s.poll(2), "seen once: not settled");
        assert!(s.poll(2), "seen twice: load");
        assert!(!s.poll(2), "loaded: nothing more to do");
    }

    #[test]
    fn a_torn_version_seen_once_is_never_loaded() {
        let mut s = Settle::new(1);
        assert!(!s.poll(0), "truncated");
        assert!(!s.poll(1), "rewritten as before");
        assert!(!s.poll(1));
        // Two different torn versions in a row are not "the same twice" either.
        assert!(!s.poll(7));
        assert!(!s.poll(8));
        assert!(s.poll(8));
    }

    #[test]
    fn fingerprints_follow_content_not_metadata() {
        let dir = std::env::temp_dir().join(format!("meshmeter-fswatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"aaaa").unwrap();
        let a = fingerprint([p.as_path()], 16);
        std::fs::write(&p, b"bbbb").unwrap(); // same size, maybe same mtime tick
        let b = fingerprint([p.as_path()], 16);
        assert_ne!(a, b);
        std::fs::write(&p, b"aaaa").unwrap();
        assert_eq!(fingerprint([p.as_path()], 16), a);
        assert_eq!(
            read_fingerprinted(&p, 16).0,
            a,
            "one file: the same fingerprint"
        );
        std::fs::remove_file(&p).unwrap();
        assert_ne!(
            fingerprint([p.as_path()], 16),
            a,
            "a vanished file is a change"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
