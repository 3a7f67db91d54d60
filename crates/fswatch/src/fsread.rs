//! Reading files an operator points us at without trusting them: only regular files, never
//! blocking in `open()`, never reading more than a limit (whatever `metadata().len()` says).
//! Shared by the configuration loader and the workloads file.

use std::io::Read;
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    /// Open or read failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A FIFO, device, socket or directory (possibly behind a symlink): reading it could
    /// block forever or never end (`/dev/zero`).
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// More than the limit was read.
    #[error("file is larger than the limit of {0} bytes")]
    TooLarge(u64),
}

/// `O_NONBLOCK` on Linux: opening a FIFO with no writer then returns at once instead of
/// waiting for one. The file type is checked on the open descriptor right after.
#[cfg(target_os = "linux")]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(not(target_os = "linux"))]
const O_NONBLOCK: i32 = 0;

/// Reads `path` (following symlinks) if it is a regular file of at most `max` bytes.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, FileReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(FileReadError::NotRegular(kind_name(&kind)));
    }
    let mut bytes = Vec::new();
    // The size may change between fstat and read (or lie, for procfs): read at most one byte
    // past the limit to detect an oversized file without holding more than that.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(FileReadError::TooLarge(max));
    }
    Ok(bytes)
}

/// Whether `path` (following symlinks) is a regular file, without opening it.
pub fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn kind_name(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_zero_is_refused_without_reading() {
        let err = read_regular_file(Path::new("/dev/zero"), 16).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (a device)");
    }

    #[test]
    fn oversized_files_are_refused() {
        let p = std::env::temp_dir().join(format!("meshmeter-fsread-{}", std::process::id()));
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_regular_file(&p, 10).unwrap(), b"0123456789");
        let err = read_regular_file(&p, 9).unwrap_err();
        assert_eq!(err.to_string(), "file is larger than the limit of 9 bytes");
        let _ = std::fs::remove_file(&p);
    }
}
