//! Files in a folder the guest owns, reached from the host. The guest may have made any
//! name there a link to a host file, or a FIFO; so every name is looked up from a
//! descriptor of the folder itself (`openat`, `renameat`), never following a link, and
//! nothing is waited on: what is written lands in that very folder or nowhere, and no host
//! file is opened through it.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

fn cstr(path: &[u8]) -> io::Result<CString> {
    CString::new(path).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

/// `openat(dir or the working folder, path, flags | O_CLOEXEC, 0644)`.
pub fn open_at(dir: Option<&OwnedFd>, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `at` is a descriptor we own (or AT_FDCWD) and `c` is NUL-terminated.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The folder `path` (the host's own path, followed as given).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    open_at(None, path.as_os_str().as_bytes(), libc::O_DIRECTORY)
}

/// `dir`'s subfolder `name`, itself and not a link.
pub fn subdir(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    open_at(
        Some(dir),
        name.as_bytes(),
        libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    )
}

/// `mkdirat(dir, name, 0755)`.
pub fn mkdir_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `renameat` within `dir`: the names are looked up in that folder itself, whatever
/// became of its path meanwhile. A link under `to` is replaced, not followed.
pub fn rename_at(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    let (a, b) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    let fd = dir.as_raw_fd();
    // SAFETY: valid descriptors and NUL-terminated names.
    if unsafe { libc::renameat(fd, a.as_ptr(), fd, b.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unlinkat(dir, name)`, for what is left of an unfinished write.
pub fn unlink_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: a valid descriptor and a NUL-terminated name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The regular file `name` in `dir`, `cap` bytes at most; `None` when there is none.
/// A link, a FIFO or a folder under the name is an error, and is neither followed nor
/// waited on.
pub fn read_file(dir: &OwnedFd, name: &str, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match open_at(
        Some(dir),
        name.as_bytes(),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    ) {
        Ok(f) => File::from(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(Some(bytes))
}

/// A temporary name no other write of this process or another uses.
pub fn temp_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        ".{prefix}-{}-{}.part",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replace `name` in `dir` with `bytes`: written beside it under a new name, then renamed
/// over it, so a reader sees the old content or the new; whatever the guest put under
/// the name (a link to a host file) is replaced, never written through.
pub fn replace_at(dir: &OwnedFd, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_name(name);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut f = File::from(open_at(Some(dir), tmp.as_bytes(), flags)?);
    let written = f.write_all(bytes).and_then(|()| rename_at(dir, &tmp, name));
    if written.is_err() {
        let _ = unlink_at(dir, &tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tether-unit-dirfd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("ws/.aegis")).unwrap();
        fs::create_dir_all(d.join("host")).unwrap();
        Scratch(d)
    }

    #[test]
    fn a_link_planted_under_the_name_is_replaced_not_written_through() {
        let s = scratch("link");
        let host_file = s.0.join("host/passwd");
        fs::write(&host_file, "root:x:0:0").unwrap();
        symlink(&host_file, s.0.join("ws/.aegis/out.json")).unwrap();
        let aegis = subdir(&open_dir(&s.0.join("ws")).unwrap(), ".aegis").unwrap();
        assert!(
            read_file(&aegis, "out.json", 100).is_err(),
            "a link is not read through"
        );
        replace_at(&aegis, "out.json", b"{}").unwrap();
        assert_eq!(fs::read_to_string(&host_file).unwrap(), "root:x:0:0");
        let out = s.0.join("ws/.aegis/out.json");
        assert!(fs::symlink_metadata(&out).unwrap().is_file());
        assert_eq!(read_file(&aegis, "out.json", 100).unwrap().unwrap(), b"{}");
        let names: Vec<_> = fs::read_dir(s.0.join("ws/.aegis"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.json"], "no temporary left");
    }

    #[test]
    fn a_folder_linked_out_of_the_workspace_is_not_entered() {
        let s = scratch("dir");
        fs::remove_dir(s.0.join("ws/.aegis")).unwrap();
        symlink(s.0.join("host"), s.0.join("ws/.aegis")).unwrap();
        let ws = open_dir(&s.0.join("ws")).unwrap();
        assert!(subdir(&ws, ".aegis").is_err());
    }

    #[test]
    fn a_fifo_is_not_waited_on_and_a_large_file_is_refused() {
        let s = scratch("fifo");
        let aegis = subdir(&open_dir(&s.0.join("ws")).unwrap(), ".aegis").unwrap();
        let fifo = cstr(s.0.join("ws/.aegis/pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(read_file(&aegis, "pipe", 100).is_err());
        fs::write(s.0.join("ws/.aegis/big"), vec![b'x'; 101]).unwrap();
        assert!(read_file(&aegis, "big", 100).is_err());
        assert_eq!(read_file(&aegis, "absent", 100).unwrap(), None);
    }
}
