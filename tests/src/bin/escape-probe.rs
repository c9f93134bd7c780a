//! Runs inside an `aegis-kit serve` instance and tries to get out: read serve's secrets
//! and another instance's files, write to the host, see and signal serve, ptrace, mount,
//! create a user namespace, reach the API socket, fork and allocate without bound. It
//! prints one line per attempt, `ESCAPE NAME` or `BLOCKED NAME (why)`, then `forks N`,
//! `memory_mb N` and `DONE`. Targets come from `PROBE_*` environment variables.

use std::os::unix::net::UnixStream;
use std::path::Path;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn report(name: &str, result: Result<(), String>) {
    match result {
        Ok(()) => println!("ESCAPE {name}"),
        Err(why) => println!("BLOCKED {name} ({why})"),
    }
}

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Run `f` in a forked child; its exit status 0 means success.
fn in_child(f: impl FnOnce() -> bool) -> Result<(), String> {
    // SAFETY: this program is single-threaded; the child only makes syscalls and exits.
    unsafe {
        match libc::fork() {
            -1 => Err(format!("fork: {}", errno())),
            0 => libc::_exit(if f() { 0 } else { 1 }),
            pid => {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    Ok(())
                } else {
                    Err("refused".into())
                }
            }
        }
    }
}

fn main() {
    let serve_pid: i32 = var("PROBE_SERVE_PID").parse().unwrap_or(0);
    for (name, path) in [
        ("read-master-key", var("PROBE_MASTER_KEY")),
        ("read-secrets", var("PROBE_SECRETS")),
        ("read-other-instance", var("PROBE_OTHER_FILE")),
        ("read-other-chosen-workspace", var("PROBE_OTHER_CHOSEN_FILE")),
        ("read-serve-log", var("PROBE_SERVE_LOG")),
    ] {
        report(name, std::fs::read(&path).map(drop).map_err(|e| e.to_string()));
    }
    report(
        "write-home",
        std::fs::write(var("PROBE_HOME_FILE"), "escaped").map_err(|e| e.to_string()),
    );
    // Inside a sandbox this lands in a private tmpfs; the test looks for it on the host.
    let _ = std::fs::write(var("PROBE_VARTMP_FILE"), "escaped");
    report(
        "see-serve-process",
        if Path::new(&format!("/proc/{serve_pid}")).exists() {
            Ok(())
        } else {
            Err("not visible".into())
        },
    );
    // SAFETY: kill with signal 0 only checks that the process can be signalled.
    report(
        "signal-serve",
        if unsafe { libc::kill(serve_pid, 0) } == 0 {
            Ok(())
        } else {
            Err(errno())
        },
    );
    report("ptrace", ptrace_a_child());
    report("mount", try_mount());
    report(
        "user-namespace",
        // SAFETY: unshare in a child that exits right after.
        in_child(|| unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0),
    );
    report(
        "connect-api-socket",
        UnixStream::connect(var("PROBE_API_SOCKET"))
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    let tcp = var("PROBE_TCP");
    if !tcp.is_empty() {
        report(
            "connect-tcp",
            std::net::TcpStream::connect(&tcp)
                .map(drop)
                .map_err(|e| e.to_string()),
        );
    }
    let forks: usize = var("PROBE_FORKS").parse().unwrap_or(0);
    if forks > 0 {
        println!("forks {}", fork_many(forks));
    }
    let mb: usize = var("PROBE_MEMORY_MB").parse().unwrap_or(0);
    if mb > 0 {
        println!("memory_mb {}", allocate(mb));
    }
    println!("DONE");
}

fn ptrace_a_child() -> Result<(), String> {
    // SAFETY: a child that waits to be killed; attach, then detach and kill it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::pause();
            libc::_exit(0);
        }
        let r = libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
        let result = if r == 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
            Ok(())
        } else {
            Err(errno())
        };
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        result
    }
}

fn try_mount() -> Result<(), String> {
    let dir = std::env::current_dir().unwrap_or_default().join("probe-mnt");
    let _ = std::fs::create_dir_all(&dir);
    let target = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).unwrap_or_default();
    // SAFETY: valid C strings; the mount is undone at once if it happened.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let result = if r == 0 {
        // SAFETY: as above.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
        Ok(())
    } else {
        Err(errno())
    };
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Fork up to `max` sleeping children; how many were created. All are killed after.
fn fork_many(max: usize) -> usize {
    let mut pids = Vec::new();
    for _ in 0..max {
        // SAFETY: children only pause until killed.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => break,
            0 => unsafe {
                libc::pause();
                libc::_exit(0);
            },
            p => pids.push(p),
        }
    }
    for p in &pids {
        // SAFETY: our own children.
        unsafe {
            libc::kill(*p, libc::SIGKILL);
            libc::waitpid(*p, std::ptr::null_mut(), 0);
        }
    }
    pids.len()
}

/// Map and touch 16 MiB at a time up to `max_mb`; how many MiB it got.
fn allocate(max_mb: usize) -> usize {
    let chunk = 16 * 1024 * 1024;
    let mut got = 0;
    while got < max_mb {
        // SAFETY: a fresh private anonymous mapping, written in full, never freed
        // (the process exits right after).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                chunk,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            break;
        }
        // SAFETY: p points to `chunk` writable bytes.
        unsafe { std::ptr::write_bytes(p as *mut u8, 1, chunk) };
        got += 16;
    }
    got
}
