//! `aegis-kit __sandbox POLICY -- PROGRAM ARGS`: build the namespaces and the filesystem
//! view of one instance, then run its program confined.
//!
//! Processes: this launcher (in serve's namespaces and process group, so serve's
//! signals and parent-death signal reach it) unshares the namespaces and forks; the
//! child is PID 1 of the instance's pid namespace: it builds the mounts, forks the
//! program (which `confine`s itself and execs), reaps every orphan, and exits with the
//! program's status, which takes everything left in the namespace down with it. The
//! launcher exits with the same status.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use super::{confine, Level, Net, Policy, Probe};

/// Exit status when the sandbox cannot be built (as a shell's "cannot execute").
const SETUP_FAILED: u8 = 126;

/// A failed step, named.
#[derive(Debug)]
pub struct StepError {
    step: String,
    cause: io::Error,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.cause)
    }
}

fn step(name: impl Into<String>, rc: libc::c_int) -> Result<(), StepError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(StepError {
            step: name.into(),
            cause: io::Error::last_os_error(),
        })
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Entry of `aegis-kit __sandbox`.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let (policy, argv) = match parse(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("aegis-sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    let probe = Probe::here_without_namespaces();
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if policy.net == Net::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: getuid/getgid/unshare act on this single-threaded process only.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if let Err(e) = step("unshare namespaces", unsafe { libc::unshare(flags) }) {
        if policy.level == Level::Strict {
            eprintln!("aegis-sandbox: strict sandbox refused: {e}");
            return ExitCode::from(SETUP_FAILED);
        }
        eprintln!(
            "aegis-sandbox: running without namespaces ({e}); landlock, seccomp and limits still apply"
        );
        return run_confined(&policy, &probe, &argv, false);
    }
    if let Err(e) = map_ids(uid, gid) {
        eprintln!("aegis-sandbox: {e}");
        return ExitCode::from(SETUP_FAILED);
    }
    // SAFETY: this process is single-threaded (a fresh exec), so fork is safe.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("aegis-sandbox: fork: {}", io::Error::last_os_error());
            ExitCode::from(SETUP_FAILED)
        }
        0 => init(&policy, &probe, &argv),
        pid => ExitCode::from(wait_for(pid)),
    }
}

fn parse(args: Vec<OsString>) -> Result<(Policy, Vec<CString>), String> {
    let mut it = args.into_iter();
    let policy = it.next().ok_or("missing policy")?;
    let policy: Policy = serde_json::from_slice(policy.as_bytes()).map_err(|e| format!("bad policy: {e}"))?;
    if it.next().as_deref() != Some(std::ffi::OsStr::new("--")) {
        return Err("expected -- before the program".into());
    }
    let argv: Vec<CString> = it
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "NUL in an argument".to_string()))
        .collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err("no program given".into());
    }
    Ok((policy, argv))
}

/// Map serve's user and group to themselves inside the user namespace.
fn map_ids(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), StepError> {
    let write = |path: &str, text: String| {
        fs::write(path, text).map_err(|cause| StepError {
            step: format!("write {path}"),
            cause,
        })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))
}

/// Wait for `pid`; its exit status as ours (128 + signal when killed).
fn wait_for(pid: libc::pid_t) -> u8 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return SETUP_FAILED;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else {
        128u8.wrapping_add(libc::WTERMSIG(status) as u8)
    }
}

/// PID 1 of the instance: mounts, then the program, then reaping until it exits.
fn init(policy: &Policy, probe: &Probe, argv: &[CString]) -> ExitCode {
    // SAFETY: prctl on this process: die with the launcher, so serve's SIGKILL of the
    // launcher (or serve's own death) takes the whole namespace down.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // A half-built view could show what it should hide: never run the program then.
    if let Err(e) = build_view(policy) {
        eprintln!("aegis-sandbox: cannot build the filesystem view: {e}");
        return ExitCode::from(SETUP_FAILED);
    }
    // The working folder inherited from serve is the host's, seen read-only under the
    // view: enter the workspace again by its path, so relative paths (a shell's `touch
    // x`) land in the view's writable workspace.
    if let Err(e) = std::env::set_current_dir(&policy.workspace) {
        eprintln!("aegis-sandbox: cannot enter {}: {e}", policy.workspace.display());
    }
    let name = policy.hostname.as_bytes();
    // SAFETY: sethostname reads `name` for its length; we own the uts namespace.
    unsafe {
        libc::sethostname(name.as_ptr().cast(), name.len());
    }
    if policy.net == Net::None {
        loopback_up();
    }
    // SAFETY: still single-threaded.
    let program = match unsafe { libc::fork() } {
        -1 => {
            eprintln!("aegis-sandbox: fork: {}", io::Error::last_os_error());
            return ExitCode::from(SETUP_FAILED);
        }
        0 => return run_confined(policy, probe, argv, true),
        pid => pid,
    };
    // Reap everything: orphans of the namespace are ours. Stop when the program exits.
    loop {
        let mut status = 0;
        // SAFETY: waitpid for any child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == program {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u8
            } else {
                128u8.wrapping_add(libc::WTERMSIG(status) as u8)
            };
            return ExitCode::from(code);
        }
        if r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return ExitCode::from(SETUP_FAILED);
        }
    }
}

/// Confine this process and exec the program; returns only on failure.
fn run_confined(policy: &Policy, probe: &Probe, argv: &[CString], namespaced: bool) -> ExitCode {
    if let Err(e) = confine::apply(policy, probe, namespaced) {
        eprintln!("aegis-sandbox: {e}");
        if policy.level == Level::Strict || e.fatal {
            return ExitCode::from(SETUP_FAILED);
        }
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the call.
    unsafe {
        libc::execvp(ptrs[0], ptrs.as_ptr());
    }
    eprintln!(
        "aegis-sandbox: cannot run {}: {}",
        argv[0].to_string_lossy(),
        io::Error::last_os_error()
    );
    ExitCode::from(127)
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), StepError> {
    let src_c = src.map(cstr);
    let target_c = cstr(target);
    let fs_c = fstype.map(|f| CString::new(f).unwrap_or_default());
    let data_c = data.map(|d| CString::new(d).unwrap_or_default());
    // SAFETY: every pointer is a valid C string or NULL for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            target_c.as_ptr(),
            fs_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            flags,
            data_c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr().cast()),
        )
    };
    step(format!("mount {}", target.display()), rc)
}

/// `mount_setattr(path, AT_RECURSIVE?, set, clear)`.
fn set_attr(path: &Path, recursive: bool, set: u64, clear: u64) -> Result<(), StepError> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let p = cstr(path);
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: valid path and attribute struct of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    step(format!("mount_setattr {}", path.display()), rc as libc::c_int)
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`), to be placed
/// again after the folders above it are covered.
fn detach_copy(path: &Path, recursive: bool) -> Result<libc::c_int, StepError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let p = cstr(path);
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | if recursive {
            libc::AT_RECURSIVE as libc::c_uint
        } else {
            0
        };
    // SAFETY: a valid path; the returned fd is owned by this process.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    if fd < 0 {
        return Err(StepError {
            step: format!("open_tree {}", path.display()),
            cause: io::Error::last_os_error(),
        });
    }
    Ok(fd as libc::c_int)
}

/// Attach a detached mount `fd` at `target`.
fn attach(fd: libc::c_int, target: &Path) -> Result<(), StepError> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let empty = CString::default();
    let t = cstr(target);
    // SAFETY: fd is a detached mount from open_tree; paths are valid C strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    // SAFETY: closing our own fd.
    unsafe {
        libc::close(fd);
    }
    step(format!("move_mount {}", target.display()), rc as libc::c_int)
}

/// The instance's view of the filesystem: the host read-only, serve's state hidden, the
/// workspace and tether socket at their usual paths, private `/tmp`, `/var/tmp`, `/proc`.
fn build_view(policy: &Policy) -> Result<(), StepError> {
    let tmp_opts = format!("size={}m,mode=1777", policy.limits.tmp_mb);
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    // The workspace and the socket usually live inside serve's state folder, which is
    // about to be covered: take detached copies first, put them back afterwards.
    let ws = detach_copy(&policy.workspace, true)?;
    // (copy, path, whether a folder): the files and folders to put back.
    let mut kept = Vec::new();
    for f in policy
        .tether
        .iter()
        .chain(&policy.keep_files)
        .filter(|f| f.exists())
    {
        kept.push((detach_copy(f, false)?, f, false));
    }
    for d in policy.keep_dirs.iter().filter(|d| d.is_dir()) {
        kept.push((detach_copy(d, true)?, d, true));
    }
    mount(
        Some(Path::new("tmpfs")),
        Path::new("/tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&tmp_opts),
    )?;
    for dir in policy.hide_dirs.iter().filter(|d| d.is_dir()) {
        mount(
            Some(Path::new("tmpfs")),
            dir,
            Some("tmpfs"),
            nosuid_nodev,
            Some("size=1m,mode=755"),
        )?;
    }
    for file in policy.hide_files.iter().filter(|f| f.exists()) {
        mount(Some(Path::new("/dev/null")), file, None, libc::MS_BIND, None)?;
    }
    mkdir(&policy.workspace)?;
    attach(ws, &policy.workspace)?;
    for (fd, path, folder) in kept {
        if path.exists() {
            // Not covered: it is still there as it was (and may be a running binary,
            // which must not be opened for writing).
            // SAFETY: closing our own fd.
            unsafe {
                libc::close(fd);
            }
            continue;
        }
        if folder {
            mkdir(path)?;
        } else {
            if let Some(parent) = path.parent() {
                mkdir(parent)?;
            }
            touch(path)?;
        }
        attach(fd, path)?;
    }
    // Our own /proc (this pid namespace only), and a pid limit that bounds a fork bomb
    // (per namespace since Linux 6.14; older kernels keep the rlimit only).
    mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        nosuid_nodev | libc::MS_NOEXEC,
        None,
    )?;
    let _ = fs::write(
        "/proc/sys/kernel/pid_max",
        policy.limits.max_procs.max(301).to_string(),
    );
    // Everything read-only and without setuid, then the writable places opened again.
    set_attr(Path::new("/"), true, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0)?;
    set_attr(&policy.workspace, true, 0, MOUNT_ATTR_RDONLY)?;
    set_attr(Path::new("/tmp"), false, 0, MOUNT_ATTR_RDONLY)?;
    mount(
        Some(Path::new("tmpfs")),
        Path::new("/var/tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&tmp_opts),
    )?;
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), StepError> {
    fs::create_dir_all(p).map_err(|cause| StepError {
        step: format!("mkdir {}", p.display()),
        cause,
    })
}

fn touch(p: &Path) -> Result<(), StepError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map(drop)
        .map_err(|cause| StepError {
            step: format!("create {}", p.display()),
            cause,
        })
}

/// Bring `lo` up in a fresh network namespace, so local servers a tool starts work.
fn loopback_up() {
    // SAFETY: an ioctl on a socket we own with a zeroed, then filled, ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &req);
        }
        libc::close(fd);
    }
}
