//! [ours] Services that come back: the executable `*.start` scripts of `.aegis/startup/`
//! run, in the order of their names, each time the instance starts, as AegisVM's harness
//! runs them when it boots a VM. A server the model started lives only as long as the
//! instance runs, and an idle instance is stopped; its script starts it again.
//!
//! Only where no harness does it: on a direct tether (`aegis-kit serve`, where every
//! start of the agent is a start of the instance, since its sandbox ends with the agent).
//!
//! A script is the model's code, run without a model call, so it runs as `bash` runs a
//! command (the same sandbox, without the agent's keys, a process group of its own, no
//! input) and only when `bash` is on. Its output goes to `.aegis/startup/NAME.start.log`
//! (the first MiB, as a background job's). The next script waits for it [`WAIT`] at most: one
//! that keeps running (a server started in the foreground) runs on with the instance.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::shell::{exit_of, Shell};

/// The scripts' folder, under the workspace.
pub const DIR: &str = ".aegis/startup";
/// How long the next script waits for one still running.
pub const WAIT: Duration = Duration::from_secs(10);

/// What became of one script.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    /// It ended: its exit status (a signal as 128 + its number) after so many seconds.
    Exited { name: String, code: i32, secs: f64 },
    /// It still ran after [`WAIT`], and runs on (its process group).
    Running { name: String, pid: u32 },
    /// Not run, and why.
    Skipped { name: String, why: String },
}

/// Run the scripts of `workspace`'s [`DIR`] on a thread of their own, as `shell` runs
/// commands, so the agent answers meanwhile; no thread where there are none (most
/// instances: an idle agent's memory is counted).
pub fn spawn(shell: Shell) {
    let dir = shell.dir.join(DIR);
    let names = match scripts(&dir) {
        Ok(names) if names.is_empty() => return,
        Ok(names) => names,
        Err(why) => return log::warn!("startup: {DIR} not read: {why}"),
    };
    let spawned = thread::Builder::new()
        .name("startup".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            run_these(&shell, &dir, names, WAIT);
        });
    if let Err(e) = spawned {
        log::error!("cannot run the startup scripts of {DIR}: {e}");
    }
}

/// Whether the workspace has a script to run (to say why none ran when `bash` is off).
pub fn any_in(workspace: &Path) -> bool {
    scripts(&workspace.join(DIR)).is_ok_and(|s| !s.is_empty())
}

/// Run the scripts of the workspace's [`DIR`] one after the other (as [`spawn`] does,
/// here on the caller's thread).
#[cfg(test)]
pub fn run_all(shell: &Shell, wait: Duration) -> Vec<Ran> {
    let dir = shell.dir.join(DIR);
    match scripts(&dir) {
        Ok(names) => run_these(shell, &dir, names, wait),
        Err(_) => Vec::new(),
    }
}

/// Run the scripts `names` of `dir`, each waited for `wait` at most; what became of each,
/// also logged.
fn run_these(shell: &Shell, dir: &Path, names: Vec<String>, wait: Duration) -> Vec<Ran> {
    let mut ran = Vec::new();
    for name in names {
        // Said as each ends: the next may keep the thread a while.
        let r = run_one(shell, dir, name, wait);
        match &r {
            Ran::Exited { name, code: 0, secs } => {
                log::info!("startup: {name} exited 0 after {secs:.1} s")
            }
            Ran::Exited { name, code, secs } => log::warn!(
                "startup: {name} exited {code} after {secs:.1} s; its output is in {DIR}/{name}.log"
            ),
            Ran::Running { name, pid } => log::info!(
                "startup: {name} still runs after {} s (pid {pid}): it runs on with the instance",
                wait.as_secs_f64()
            ),
            Ran::Skipped { name, why } => log::warn!("startup: {name} not run: {why}"),
        }
        ran.push(r);
    }
    ran
}

/// The `*.start` files of `dir`, by name; none when there is no such folder.
fn scripts(dir: &Path) -> Result<Vec<String>, String> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
        // The logs are written in it: never through a link the model put there.
        Ok(m) if !m.is_dir() => return Err("it is not a folder".into()),
        Ok(_) => {}
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".start") && n.len() > ".start".len())
        .collect();
    names.sort();
    Ok(names)
}

fn run_one(shell: &Shell, dir: &Path, name: String, wait: Duration) -> Ran {
    let path = dir.join(&name);
    let skipped = |why: String| Ran::Skipped {
        name: name.clone(),
        why,
    };
    match fs::metadata(&path) {
        Err(e) => return skipped(e.to_string()),
        Ok(m) if !m.is_file() => return skipped("not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            return skipped(format!("not executable (chmod +x {DIR}/{name})"))
        }
        Ok(_) => {}
    }
    let log = match open_log(&dir.join(format!("{name}.log"))) {
        Ok(f) => f,
        Err(e) => return skipped(format!("cannot write its log: {e}")),
    };
    // As the harness does, a script without `#!` is a shell script.
    let mut cmd = match has_shebang(&path) {
        true => shell.program(&path),
        false => {
            let mut c = shell.program("sh");
            c.arg(&path);
            c
        }
    };
    let pipe = std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w)));
    let reader = match pipe {
        Ok((reader, out, err)) => {
            cmd.stdout(out).stderr(err);
            reader
        }
        Err(e) => return skipped(format!("cannot make a pipe: {e}")),
    };
    let begun = Instant::now();
    let child = cmd.spawn();
    // The command holds the pipe's writing ends: dropped, the script's end closes it.
    drop(cmd);
    let child = match child {
        Ok(c) => c,
        Err(e) => return skipped(format!("cannot start it: {e}")),
    };
    // Read to its end (a server it started may write on for ever), kept to its head.
    let copied = thread::Builder::new()
        .name("startup-output".into())
        .stack_size(64 * 1024)
        .spawn(move || super::jobs::log_head(reader, log, |_| {}));
    if let Err(e) = copied {
        log::warn!("startup: {name}: its output is not kept ({e})");
    }
    let pid = child.id();
    let exit = match exit_of(child) {
        Ok(rx) => rx,
        Err(e) => return skipped(format!("cannot wait for it: {e}")),
    };
    match exit.recv_timeout(wait) {
        Ok(Ok(status)) => Ran::Exited {
            name,
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            secs: begun.elapsed().as_secs_f64(),
        },
        Ok(Err(e)) => skipped(format!("cannot wait for it: {e}")),
        // Its waiter thread reaps it whenever it ends.
        Err(_) => Ran::Running { name, pid },
    }
}

fn has_shebang(path: &Path) -> bool {
    let mut head = [0u8; 2];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == *b"#!"
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn script(dir: &Path, name: &str, text: &str, mode: u32) {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn shell(ws: &TempDir) -> Shell {
        Shell {
            dir: ws.path().to_path_buf(),
            timeout: Duration::from_secs(60),
            hidden_env: Vec::new(),
        }
    }

    #[test]
    fn scripts_run_in_name_order_with_or_without_a_shebang_and_only_executable_ones() {
        let ws = TempDir::new("startup-order");
        let dir = ws.path().join(DIR);
        fs::create_dir_all(&dir).unwrap();
        script(
            &dir,
            "20-b.start",
            "echo b >> order.txt; echo to the log; exit 3",
            0o755,
        );
        script(&dir, "10-a.start", "#!/bin/sh\necho a >> order.txt\n", 0o755);
        script(&dir, "30-c.start", "echo c >> order.txt", 0o644);
        script(&dir, "notes.txt", "echo d >> order.txt", 0o755);
        let ran = run_all(&shell(&ws), Duration::from_secs(20));
        assert_eq!(fs::read_to_string(ws.path().join("order.txt")).unwrap(), "a\nb\n");
        let codes: Vec<(&str, i32)> = ran
            .iter()
            .filter_map(|r| match r {
                Ran::Exited { name, code, .. } => Some((name.as_str(), *code)),
                _ => None,
            })
            .collect();
        assert_eq!(codes, [("10-a.start", 0), ("20-b.start", 3)]);
        assert_eq!(
            ran[2],
            Ran::Skipped {
                name: "30-c.start".into(),
                why: format!("not executable (chmod +x {DIR}/30-c.start)")
            }
        );
        assert_eq!(ran.len(), 3, "{ran:?}");
        let log = fs::read_to_string(dir.join("20-b.start.log")).unwrap();
        assert_eq!(log, "to the log\n");
    }

    #[test]
    fn one_still_running_holds_the_next_back_only_so_long_and_runs_on() {
        let ws = TempDir::new("startup-wait");
        let dir = ws.path().join(DIR);
        fs::create_dir_all(&dir).unwrap();
        script(&dir, "1-server.start", "echo up; exec sleep 30", 0o755);
        script(&dir, "2-after.start", "echo after > after.txt", 0o755);
        let begun = Instant::now();
        let ran = run_all(&shell(&ws), Duration::from_millis(300));
        let Ran::Running { pid, .. } = ran[0] else {
            panic!("{ran:?}")
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        // The test leaves nothing running: the server's whole group goes.
        super::super::shell::kill_group(pid as i32);
        assert!(alive, "the server runs on");
        assert!(begun.elapsed() < Duration::from_secs(10));
        assert_eq!(
            fs::read_to_string(ws.path().join("after.txt")).unwrap(),
            "after\n"
        );
        assert!(matches!(&ran[1], Ran::Exited { code: 0, .. }), "{ran:?}");
    }

    #[test]
    fn a_folder_that_is_a_link_or_missing_runs_nothing() {
        let ws = TempDir::new("startup-link");
        assert!(run_all(&shell(&ws), WAIT).is_empty());
        let elsewhere = TempDir::new("startup-elsewhere");
        script(elsewhere.path(), "x.start", "echo x > ran.txt", 0o755);
        fs::create_dir_all(ws.path().join(".aegis")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), ws.path().join(DIR)).unwrap();
        assert!(run_all(&shell(&ws), WAIT).is_empty());
        assert!(!ws.path().join("ran.txt").exists());
        assert!(!any_in(ws.path()));
    }
}
