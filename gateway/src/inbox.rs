//! Files sent to the bot, saved into the instance's workspace (`<workspace>/inbox/`) so
//! the agent's tools can work on them: a PDF, an archive, a spreadsheet, a large log.
//!
//! The workspace is the guest's: it may have made `inbox` a link to any host folder, or
//! planted a link under the name a file is about to take. Every step therefore goes
//! through a descriptor of the workspace, then of `inbox` opened without following a
//! link (`openat` with `O_NOFOLLOW`): a file lands in that very folder or nowhere, and no
//! host file is ever opened for writing. A file is written under a temporary name and
//! renamed when complete, so the agent never sees half of one. The same file sent again
//! (or a message read again after a crash) finds its copy and is not saved twice.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use tether::dirfd::{self, mkdir_at, open_at, rename_at};

/// The folder of the workspace that files are saved in.
pub const FOLDER: &str = "inbox";

/// Largest file saved: the Bot API lets bots fetch files of at most 20 MB.
pub const MAX_FILE: u64 = 20 * 1024 * 1024;

/// Free space a saved file must leave on the workspace's file system: a chat can fill a
/// small host's disk otherwise.
pub const MIN_FREE: u64 = 64 * 1024 * 1024;

/// The most the inbox holds by default (`inbox_max_mb`): a chat open to strangers cannot
/// fill the host's disk through it, nor one chat's files crowd out the instance's work.
pub const DEFAULT_MAX_TOTAL: u64 = 1024 * 1024 * 1024;

/// Names tried for one file (`report.pdf`, `report (2).pdf`, ...) before giving up.
const MAX_NAMES: u32 = 100;

/// Why a file was not saved.
#[derive(Debug)]
pub enum InboxError {
    /// `inbox` is not a folder of the workspace (a link, a file).
    NotAFolder,
    /// The file would leave less than [`MIN_FREE`] on the disk.
    DiskFull { free: u64 },
    /// The inbox would hold more than its limit (`inbox_max_mb`).
    InboxFull { holds: u64, max: u64 },
    /// Every candidate name is taken by other content.
    NoName,
    /// Fetching the file's bytes failed (the source's error).
    Source(String),
    /// The file system refused (what was being done).
    Io(&'static str, io::Error),
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboxError::NotAFolder => write!(f, "the workspace's {FOLDER} is not a folder"),
            InboxError::DiskFull { free } => write!(
                f,
                "the workspace's disk has {} MB free, and {} MB must stay free",
                free / (1024 * 1024),
                MIN_FREE / (1024 * 1024)
            ),
            InboxError::InboxFull { holds, max } => write!(
                f,
                "{FOLDER}/ holds {} MB, and the gateway keeps it under {} MB (its inbox_max_mb): \
                 files there no longer needed can be deleted to make room",
                megabytes(*holds),
                max / (1024 * 1024)
            ),
            InboxError::NoName => write!(f, "{MAX_NAMES} files of that name are in {FOLDER} already"),
            InboxError::Source(e) => write!(f, "{e}"),
            InboxError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// A file saved: its path relative to the workspace, and its size.
#[derive(Debug, PartialEq)]
pub struct Saved {
    /// `inbox/report.pdf`.
    pub path: String,
    /// Bytes.
    pub size: u64,
}

/// Save a file called `name` (already safe: see [`safe_name`]) into `workspace`'s inbox,
/// which holds `max` bytes at most. `fill` writes its bytes (at most [`MAX_FILE`]);
/// `size_hint`, when known, is checked against the free space first.
pub fn save(
    workspace: &Path,
    name: &str,
    size_hint: Option<u64>,
    max: u64,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), String>,
) -> Result<Saved, InboxError> {
    let ws = open_workspace(workspace)?;
    match mkdir_at(&ws, FOLDER) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(InboxError::Io("cannot make the inbox folder", e)),
    }
    let dir = open_inbox(&ws)?;
    let free = free_bytes(&dir).map_err(|e| InboxError::Io("cannot read the free space", e))?;
    if free < MIN_FREE + size_hint.unwrap_or(0) {
        return Err(InboxError::DiskFull { free });
    }
    let holds = bytes_in(&dir).map_err(|e| InboxError::Io("cannot read the inbox folder", e))?;

    let tmp = dirfd::temp_name("upload");
    let file = open_at(
        Some(&dir),
        tmp.as_bytes(),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
    )
    .map_err(|e| InboxError::Io("cannot create the file", e))?;
    let _cleanup = Unlink {
        dir: &dir,
        name: &tmp,
    };
    let mut out = Capped {
        file: File::from(file),
        left: MAX_FILE,
    };
    fill(&mut out).map_err(InboxError::Source)?;
    out.file
        .sync_all()
        .map_err(|e| InboxError::Io("cannot write the file", e))?;
    let size = MAX_FILE - out.left;

    for n in 1..=MAX_NAMES {
        let candidate = numbered(name, n);
        match same_content(&dir, &candidate, &out.file, size) {
            // The same file saved before (sent twice, or a message read again).
            Ok(true) => return Ok(saved(&candidate, size)),
            Ok(false) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A link, a folder, something unreadable: not ours to replace.
            Err(_) => continue,
        }
        // Only a file not there already counts against the limit: one saved before a
        // crash is found above, whatever the inbox holds now.
        if holds.saturating_add(size) > max {
            return Err(InboxError::InboxFull { holds, max });
        }
        rename_at(&dir, &tmp, &candidate).map_err(|e| InboxError::Io("cannot name the file", e))?;
        return Ok(saved(&candidate, size));
    }
    Err(InboxError::NoName)
}

/// `bytes` in MB, to a tenth (rounded half up). In whole numbers: float formatting
/// would be 4 KiB of the gateway's code for this alone.
pub fn megabytes(bytes: u64) -> String {
    let tenths = (u128::from(bytes) * 10 + 512 * 1024) / (1024 * 1024);
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// What `workspace`'s inbox holds now, in bytes (for `--check`); 0 while it has none.
pub fn holds(workspace: &Path) -> Result<u64, InboxError> {
    let ws = open_workspace(workspace)?;
    match open_inbox(&ws) {
        Err(InboxError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
        Ok(dir) => bytes_in(&dir).map_err(|e| InboxError::Io("cannot read the inbox folder", e)),
    }
}

fn open_workspace(workspace: &Path) -> Result<OwnedFd, InboxError> {
    dirfd::open_dir(workspace).map_err(|e| InboxError::Io("cannot open the workspace", e))
}

/// The workspace's inbox folder itself, never through a link put in its place.
fn open_inbox(ws: &OwnedFd) -> Result<OwnedFd, InboxError> {
    dirfd::subdir(ws, FOLDER).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => InboxError::NotAFolder,
        _ => InboxError::Io("cannot open the inbox folder", e),
    })
}

fn saved(name: &str, size: u64) -> Saved {
    Saved {
        path: format!("{FOLDER}/{name}"),
        size,
    }
}

/// A name for a file sent as `given`, fit for the inbox and for a note to the model: its
/// last path part, without control characters, backticks, brackets or a leading dot, at
/// most 100 characters (the extension kept); `file` when nothing is left.
pub fn safe_name(given: Option<&str>) -> String {
    clean_name(given.unwrap_or("")).unwrap_or_else(|| "file".into())
}

/// As [`safe_name`], `None` when nothing is left.
pub fn clean_name(given: &str) -> Option<String> {
    let last = given.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '`' | '[' | ']'))
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return None;
    }
    if cleaned.chars().count() <= 100 {
        return Some(cleaned.to_string());
    }
    // An extension is kept whole or not at all: one cut to 16 characters (`. 0a   `)
    // could end in spaces, and is no extension anyway.
    let (stem, ext) = match split_ext(cleaned) {
        (stem, ext) if ext.chars().count() <= 16 && !ext.contains(char::is_whitespace) => (stem, ext),
        _ => (cleaned, ""),
    };
    let stem: String = stem.chars().take(100 - ext.chars().count()).collect();
    Some(format!("{}{ext}", stem.trim_end()))
}

/// `name` itself for `n` = 1, else `stem (n).ext`.
fn numbered(name: &str, n: u32) -> String {
    if n == 1 {
        return name.to_string();
    }
    let (stem, ext) = split_ext(name);
    format!("{stem} ({n}){ext}")
}

/// (`report`, `.pdf`); a name that is all extension keeps it as its stem.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// Whether `name` in `dir` is a regular file (not a link) of `size` bytes holding what
/// `ours` holds. `NotFound` when there is no such name.
fn same_content(dir: &OwnedFd, name: &str, ours: &File, size: u64) -> io::Result<bool> {
    // Non-blocking: a FIFO planted under the name must not hang the gateway.
    let theirs = File::from(open_at(
        Some(dir),
        name.as_bytes(),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    )?);
    let meta = theirs.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() != size {
        return Ok(false);
    }
    let mut a = ours;
    a.seek(SeekFrom::Start(0))?;
    let mut b = theirs;
    let (mut x, mut y) = ([0u8; 8192], [0u8; 8192]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The file being written, refusing bytes past [`MAX_FILE`].
struct Capped {
    file: File,
    left: u64,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(format!(
                "the file is larger than {} MB",
                MAX_FILE / (1024 * 1024)
            )));
        }
        let n = self.file.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Removes the temporary file, whether the save ended well (it was renamed: nothing to
/// remove) or not.
struct Unlink<'a> {
    dir: &'a OwnedFd,
    name: &'a str,
}

impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        // Gone already when the file was renamed into place.
        let _ = dirfd::unlink_at(self.dir, self.name);
    }
}

/// Bytes the regular files of `dir` hold (not its links, nor what is in its folders:
/// what the gateway saves lands at its top), unfinished uploads included.
fn bytes_in(dir: &OwnedFd) -> io::Result<u64> {
    // SAFETY: dup of a descriptor we own; the copy is given to fdopendir, which owns it
    // from then on and closes it in closedir.
    let stream = unsafe {
        let copy = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = libc::fdopendir(copy);
        if stream.is_null() {
            let e = io::Error::last_os_error();
            libc::close(copy);
            return Err(e);
        }
        // A descriptor read before starts at its end otherwise.
        libc::rewinddir(stream);
        stream
    };
    let mut total = 0u64;
    loop {
        // SAFETY: `stream` is open until closedir below; each entry is read before the
        // next readdir.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid descriptor, a NUL-terminated name and a buffer written in full
        // by a successful call, read only then.
        let ok = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        };
        if ok {
            // SAFETY: fstatat succeeded.
            let st = unsafe { st.assume_init() };
            if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                total = total.saturating_add(st.st_size as u64);
            }
        }
    }
    // SAFETY: opened above, closed once.
    unsafe { libc::closedir(stream) };
    Ok(total)
}

/// Bytes an unprivileged writer may still use on `dir`'s file system.
fn free_bytes(dir: &OwnedFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is written in full by a successful call, and read only then.
    let st = unsafe {
        if libc::fstatvfs(dir.as_raw_fd(), st.as_mut_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        st.assume_init()
    };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// A scratch folder removed on drop: `ws` (the workspace) and `host` (outside it).
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("gw-unit-inbox-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(d.join("ws")).unwrap();
            fs::create_dir_all(d.join("host")).unwrap();
            Scratch(d)
        }
        fn ws(&self) -> PathBuf {
            self.0.join("ws")
        }
        fn host(&self) -> PathBuf {
            self.0.join("host")
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(self.ws().join(FOLDER))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn bytes(b: &'static [u8]) -> impl FnOnce(&mut dyn Write) -> Result<(), String> {
        move |out| out.write_all(b).map_err(|e| e.to_string())
    }

    #[test]
    fn files_are_saved_whole_numbered_when_the_name_is_taken_and_never_twice() {
        let s = Scratch::new("names");
        let a = save(&s.ws(), "report.pdf", Some(3), DEFAULT_MAX_TOTAL, bytes(b"one")).unwrap();
        assert_eq!(
            a,
            Saved {
                path: "inbox/report.pdf".into(),
                size: 3
            }
        );
        assert_eq!(fs::read(s.ws().join("inbox/report.pdf")).unwrap(), b"one");
        // Other content under the same name gets the next free name.
        let b = save(&s.ws(), "report.pdf", None, DEFAULT_MAX_TOTAL, bytes(b"two")).unwrap();
        assert_eq!(b.path, "inbox/report (2).pdf");
        // The same content again (sent twice, or read again after a crash) is found.
        let again = save(&s.ws(), "report.pdf", None, DEFAULT_MAX_TOTAL, bytes(b"two")).unwrap();
        assert_eq!(again.path, "inbox/report (2).pdf");
        assert_eq!(s.names(), ["report (2).pdf", "report.pdf"], "no temporary left");
        // A failing source leaves nothing behind.
        let failed = save(&s.ws(), "x.zip", None, DEFAULT_MAX_TOTAL, |out| {
            out.write_all(b"half").unwrap();
            Err("the connection dropped".into())
        });
        assert!(matches!(failed, Err(InboxError::Source(ref e)) if e == "the connection dropped"));
        assert_eq!(s.names(), ["report (2).pdf", "report.pdf"]);
    }

    #[test]
    fn an_inbox_linked_out_of_the_workspace_is_refused() {
        let s = Scratch::new("link");
        symlink(s.host(), s.ws().join(FOLDER)).unwrap();
        let r = save(&s.ws(), "a.txt", None, DEFAULT_MAX_TOTAL, bytes(b"planted"));
        assert!(matches!(r, Err(InboxError::NotAFolder)), "{r:?}");
        assert_eq!(
            fs::read_dir(s.host()).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn a_link_or_a_fifo_under_the_name_is_never_followed_nor_waited_on() {
        let s = Scratch::new("planted");
        fs::create_dir(s.ws().join(FOLDER)).unwrap();
        // Even a link to a host file that holds the very bytes sent is not taken as the
        // file saved before (which would tell the chat what the host file holds).
        let victim = s.host().join("authorized_keys");
        fs::write(&victim, "ssh-ed25519 AAAA").unwrap();
        symlink(&victim, s.ws().join("inbox/keys")).unwrap();
        let r = save(
            &s.ws(),
            "keys",
            None,
            DEFAULT_MAX_TOTAL,
            bytes(b"ssh-ed25519 AAAA"),
        )
        .unwrap();
        assert_eq!(r.path, "inbox/keys (2)");
        assert!(fs::symlink_metadata(s.ws().join("inbox/keys"))
            .unwrap()
            .is_symlink());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "ssh-ed25519 AAAA");
        // A FIFO would block a plain open for reading until someone writes to it.
        let fifo = CString::new(s.ws().join("inbox/notes.md").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let r = save(&s.ws(), "notes.md", None, DEFAULT_MAX_TOTAL, bytes(b"notes")).unwrap();
        assert_eq!(r.path, "inbox/notes (2).md");
    }

    #[test]
    fn size_and_free_space_are_capped() {
        let s = Scratch::new("caps");
        let r = save(
            &s.ws(),
            "big.bin",
            Some(u64::MAX / 2),
            DEFAULT_MAX_TOTAL,
            bytes(b"x"),
        );
        assert!(matches!(r, Err(InboxError::DiskFull { .. })), "{r:?}");
        let r = save(&s.ws(), "big.bin", None, DEFAULT_MAX_TOTAL, |out| {
            let chunk = vec![0u8; 1024 * 1024];
            for _ in 0..=MAX_FILE / chunk.len() as u64 {
                out.write_all(&chunk).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        assert!(
            matches!(r, Err(InboxError::Source(ref e)) if e.contains("larger than 20 MB")),
            "{r:?}"
        );
        assert!(s.names().is_empty(), "{:?}", s.names());
    }

    #[test]
    fn the_inbox_holds_its_limit_at_most_and_a_file_saved_before_is_still_found() {
        let s = Scratch::new("limit");
        let max = 10;
        save(&s.ws(), "a.txt", None, max, bytes(b"123456")).unwrap();
        // Neither what is in its folders nor a link's target counts: only its own files.
        fs::create_dir_all(s.ws().join("inbox/sub")).unwrap();
        fs::write(s.ws().join("inbox/sub/big"), [0u8; 64]).unwrap();
        fs::write(s.host().join("target"), [0u8; 64]).unwrap();
        symlink(s.host().join("target"), s.ws().join("inbox/link")).unwrap();
        save(&s.ws(), "b.txt", None, max, bytes(b"7890")).unwrap();
        let r = save(&s.ws(), "c.txt", None, max, bytes(b"x"));
        let Err(InboxError::InboxFull { holds: 10, max: 10 }) = r else {
            panic!("{r:?}")
        };
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("inbox/ holds 0.0 MB, and the gateway keeps it under 0 MB"));
        assert_eq!(s.names(), ["a.txt", "b.txt", "link", "sub"], "no temporary left");
        // Read again after a crash: the file it saved is found, not refused.
        let again = save(&s.ws(), "b.txt", None, max, bytes(b"7890")).unwrap();
        assert_eq!(again.path, "inbox/b.txt");
        assert_eq!(holds(&s.ws()).unwrap(), 10, "as --check says it");
        // Counted through one descriptor, twice: the same (the copy shares its offset).
        let dir = open_at(
            None,
            s.ws().join(FOLDER).as_os_str().as_bytes(),
            libc::O_DIRECTORY,
        )
        .unwrap();
        assert_eq!((bytes_in(&dir).unwrap(), bytes_in(&dir).unwrap()), (10, 10));
    }

    #[test]
    fn names_are_numbered_before_the_extension() {
        assert_eq!(numbered("a.tar.gz", 3), "a.tar (3).gz");
        assert_eq!(numbered("Makefile", 2), "Makefile (2)");
        assert_eq!(safe_name(Some("../../.ssh/id_rsa")), "id_rsa");
        assert_eq!(safe_name(Some("..")), "file");
        assert_eq!(safe_name(None), "file");
        assert_eq!(safe_name(Some(".bashrc")), "bashrc");
        assert_eq!(
            safe_name(Some("C:\\Users\\x\\[draft] plan.docx")),
            "draft plan.docx"
        );
        let long = format!("{}.pdf", "é".repeat(300));
        assert_eq!(safe_name(Some(&long)), format!("{}.pdf", "é".repeat(96)));
        // Found by the property below: a long name whose last dot is followed by words.
        let words = format!("x. {}", "ab ".repeat(60));
        assert_eq!(safe_name(Some(&words)), format!("x. {}a", "ab ".repeat(32)));
        let spaced = format!("{}   .pdf", "a".repeat(120));
        assert_eq!(safe_name(Some(&spaced)), format!("{}.pdf", "a".repeat(96)));
    }

    proptest::proptest! {
        /// Whatever name a sender gives, the file lands directly in the inbox under a
        /// visible, one-line name of at most 100 characters.
        #[test]
        fn any_given_name_stays_one_visible_entry_of_the_inbox(given in "\\PC{0,300}|[./\\\\a\\n]{0,20}") {
            let n = safe_name(Some(&given));
            proptest::prop_assert!(!n.is_empty() && n.chars().count() <= 100, "{n:?}");
            proptest::prop_assert!(!n.contains(['/', '\\', '\n', '\0', '`']) && !n.starts_with('.'), "{n:?}");
            proptest::prop_assert!(n != ".." && n.trim() == n, "{n:?}");
        }
    }

    proptest::proptest! {
        /// Whole-number tenths say what float formatting said (but at an exact half,
        /// which they round up where floats round to even).
        #[test]
        fn megabytes_in_whole_numbers_read_as_float_formatting_did(bytes in 0u64..(1 << 50)) {
            proptest::prop_assume!((u128::from(bytes) * 10) % (1024 * 1024) != 512 * 1024);
            proptest::prop_assert_eq!(megabytes(bytes), format!("{:.1}", bytes as f64 / (1024.0 * 1024.0)));
        }
    }

    #[test]
    fn megabytes_round_to_a_tenth() {
        assert_eq!(megabytes(0), "0.0");
        assert_eq!(megabytes(52_428), "0.0");
        assert_eq!(megabytes(52_429), "0.1");
        assert_eq!(megabytes(1_572_864), "1.5");
        assert_eq!(megabytes(1 << 30), "1024.0");
        assert_eq!(megabytes(u64::MAX), "17592186044416.0");
    }
}
