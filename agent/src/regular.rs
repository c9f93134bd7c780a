//! Opening a file a model, a chat or the workspace named, without ever waiting on it.
//!
//! A plain `open` of a FIFO blocks until someone opens its other end, and a device may
//! never end: a `mkfifo notes.md` (one `bash` call) would then hang `read_file` on the
//! reply's own thread, where no cancel reaches it, or the agent's start on a planted
//! `.aegis/agent.json`. Opening without blocking and checking the opened file itself (not
//! the name, which can change in between) refuses both at once.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest configuration file read (agent.json, mcp.json, cron.json): far above any real
/// one, so a runaway file costs no more than this.
pub const CONFIG_CAP: u64 = 4 * 1024 * 1024;

/// `path` opened for reading, if it is a regular file (a link to one is followed).
pub fn open(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        // Reads of a regular file ignore the flag; it only keeps `open` from waiting.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// At most `cap` bytes of the regular file at `path`.
pub fn read(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The regular file at `path` as text (invalid UTF-8 is an error, as with
/// `fs::read_to_string`), at most `cap` bytes of it.
pub fn read_to_string(path: &Path, cap: u64) -> io::Result<String> {
    String::from_utf8(read(path, cap)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A FIFO at `path`, as the model can make one with `mkfifo`.
    pub fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// `f` finishes within 5 s (run on its own thread, which a hang leaves behind).
    pub fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("it hung on the FIFO")
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_waiting() {
        let dir = crate::testutil::TempDir::new("regular-fifo");
        let fifo = dir.path().join("notes.md");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let f = fifo.clone();
        let err = within_5s(move || read(&f, 100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let link = dir.path().join("link.md");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(within_5s(move || read(&link, 100)).is_err(), "through a link");
        assert!(read(Path::new("/dev/zero"), 100).is_err(), "a device");
        assert!(read(dir.path(), 100).is_err(), "a folder");
    }

    #[test]
    fn a_regular_file_is_read_up_to_the_cap() {
        let dir = crate::testutil::TempDir::new("regular-file");
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "hello world").unwrap();
        assert_eq!(read(&p, 5).unwrap(), b"hello");
        assert_eq!(read_to_string(&p, 100).unwrap(), "hello world");
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_to_string(&p, 100).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
