//! The sandbox `aegis-kit serve` puts around every instance, without root and without
//! external programs: Linux namespaces (user, mount, pid, ipc, uts; net with
//! `--net none`), a read-only view of the host with private `/tmp` and `/var/tmp`, serve's
//! state hidden, Landlock as a second layer, a seccomp filter, no capabilities,
//! `no_new_privs` and resource limits.
//!
//! How it runs: serve starts `aegis-kit __sandbox POLICY -- PROGRAM ARGS` (this binary,
//! a fresh single-threaded process, so it may fork freely). `launch.rs` unshares the
//! namespaces, forks a PID 1 that builds the mounts and reaps orphans, which forks the
//! program; `confine.rs` applies the limits, Landlock, capabilities and seccomp to that
//! program just before it execs. `probe` tells serve once, at start, which of these the
//! kernel offers, so it can say what is in force and refuse `strict` instances early.

pub mod confine;
pub mod launch;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How hard to insist on a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Use what the kernel offers and say what is missing (default).
    #[default]
    Auto,
    /// Refuse to start without every layer.
    Strict,
    /// No sandbox at all (explicit opt-out).
    None,
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "auto" => Ok(Level::Auto),
            "strict" => Ok(Level::Strict),
            "none" => Ok(Level::None),
            other => Err(format!("--sandbox takes auto, strict or none, not {other:?}")),
        }
    }
}

/// The network an instance gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// The host's network (the agent must reach its model).
    #[default]
    Host,
    /// A network namespace of its own: loopback only.
    None,
    /// The host's network, TCP connections only to these ports (Landlock ABI ≥ 4).
    Ports(Vec<u16>),
}

impl std::str::FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Net, String> {
        match s {
            "host" => Ok(Net::Host),
            "none" => Ok(Net::None),
            ports => ports
                .split(',')
                .map(|p| p.trim().parse::<u16>().map_err(|_| p.to_string()))
                .collect::<Result<Vec<u16>, String>>()
                .map(Net::Ports)
                .map_err(|p| format!("--net takes host, none or a list of TCP ports (443,8080), not {p:?}")),
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Net::Host => f.write_str("host"),
            Net::None => f.write_str("none"),
            Net::Ports(p) => {
                let list: Vec<String> = p.iter().map(u16::to_string).collect();
                write!(f, "tcp ports {}", list.join(","))
            }
        }
    }
}

/// Resource limits of one instance. Memory and processes go to a cgroup where one is
/// delegated to the user; here they are rlimits per process and a pid limit of the
/// instance's pid namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Data (heap and private writable mappings) per process, MiB.
    pub memory_mb: u64,
    /// Processes in the instance (pid namespace `pid_max`, and `RLIMIT_NPROC`).
    pub max_procs: u64,
    /// Open files per process.
    pub max_files: u64,
    /// Largest file a process may write, MiB.
    pub max_file_mb: u64,
    /// Size of the private `/tmp` and `/var/tmp`, MiB each.
    pub tmp_mb: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_mb: 1024,
            max_procs: 512,
            max_files: 4096,
            max_file_mb: 1024,
            tmp_mb: 256,
        }
    }
}

/// Everything the launcher needs for one instance (passed as JSON on its command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Strict or best effort.
    pub level: Level,
    /// Network.
    pub net: Net,
    /// Limits.
    pub limits: Limits,
    /// The instance's workspace: the one writable place of the host.
    pub workspace: PathBuf,
    /// The tether socket the agent dials (kept reachable).
    pub tether: Option<PathBuf>,
    /// Folders made invisible (serve's state: `AEGIS_HOME`).
    pub hide_dirs: Vec<PathBuf>,
    /// Files made unusable (the API socket, when it lives outside those folders).
    pub hide_files: Vec<PathBuf>,
    /// Files kept visible (read-only) even where a folder above them is replaced: the
    /// program itself when it lives in `/tmp` or in serve's state folder.
    #[serde(default)]
    pub keep_files: Vec<PathBuf>,
    /// Folders kept visible (read-only) the same way: an `SSL_CERT_DIR` under `/tmp`.
    #[serde(default)]
    pub keep_dirs: Vec<PathBuf>,
    /// Host name inside.
    pub hostname: String,
}

/// What the kernel offers, as found by `__sandbox-probe`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Unprivileged user namespaces (with mount, pid, ipc, uts) can be created.
    pub namespaces: bool,
    /// Why not, if not.
    pub namespaces_error: Option<String>,
    /// Landlock ABI version (0: none).
    pub landlock: i64,
    /// seccomp filters are available.
    pub seccomp: bool,
}

impl Probe {
    /// Run `exe __sandbox-probe` and read its answer; a probe that cannot run means
    /// nothing is known to work.
    pub fn run(exe: &std::path::Path) -> Probe {
        match std::process::Command::new(exe).arg("__sandbox-probe").output() {
            Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).unwrap_or_default(),
            Ok(out) => Probe {
                namespaces_error: Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                ..Probe::default()
            },
            Err(e) => Probe {
                namespaces_error: Some(format!("cannot run the probe: {e}")),
                ..Probe::default()
            },
        }
    }

    /// Landlock and seccomp, found without touching namespaces.
    pub fn here_without_namespaces() -> Probe {
        // SAFETY: plain queries about this process; no memory is shared with anyone.
        let landlock = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32,
            )
        };
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP) } >= 0;
        Probe {
            namespaces: false,
            namespaces_error: None,
            landlock: landlock.max(0),
            seccomp,
        }
    }

    /// Find out in this process (which then exits: it may have unshared itself).
    pub fn here() -> Probe {
        let base = Probe::here_without_namespaces();
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        // SAFETY: unshare of this short-lived probe process, which exits right after.
        let (namespaces, namespaces_error) = match unsafe { libc::unshare(flags) } {
            0 => (true, None),
            _ => (
                false,
                Some(format!(
                    "cannot create user namespaces: {}",
                    std::io::Error::last_os_error()
                )),
            ),
        };
        Probe {
            namespaces,
            namespaces_error,
            ..base
        }
    }

    /// What is missing for `strict`, if anything.
    pub fn missing(&self) -> Vec<String> {
        let mut m = Vec::new();
        if !self.namespaces {
            m.push(
                self.namespaces_error
                    .clone()
                    .unwrap_or_else(|| "user namespaces".into()),
            );
        }
        if self.landlock == 0 {
            m.push("Landlock (kernel 5.13+ with landlock in the LSM list)".into());
        }
        if !self.seccomp {
            m.push("seccomp filters".into());
        }
        m
    }

    /// The line `instance info` and the logs show, e.g.
    /// `user+mount+pid+ipc+uts namespaces, landlock v7, seccomp, net: host`.
    pub fn describe(&self, level: Level, net: &Net) -> String {
        if level == Level::None {
            return "none (opted out): the instance runs with serve's rights".into();
        }
        let mut parts = Vec::new();
        if self.namespaces {
            let ns = if *net == Net::None {
                "user+mount+pid+ipc+uts+net"
            } else {
                "user+mount+pid+ipc+uts"
            };
            parts.push(format!("{ns} namespaces"));
        } else {
            parts.push("no namespaces (host filesystem and processes visible)".into());
        }
        match self.landlock {
            0 => parts.push("no landlock".into()),
            v => parts.push(format!("landlock v{v}")),
        }
        parts.push(if self.seccomp {
            "seccomp".into()
        } else {
            "no seccomp".into()
        });
        let net = match net {
            Net::Ports(_) if self.landlock < 4 => format!("{net} (not enforced: landlock v4 needed)"),
            Net::None if !self.namespaces => "host (none needs namespaces)".into(),
            other => other.to_string(),
        };
        parts.push(format!("net: {net}"));
        parts.join(", ")
    }

    /// Whether an instance under `level` gets the namespaces (the layer that hides
    /// serve's state and other instances).
    pub fn isolates(&self, level: Level) -> bool {
        level != Level::None && self.namespaces
    }
}

/// Entry of `aegis-kit __sandbox-probe`: print what the kernel offers as JSON.
pub fn probe_main() -> std::process::ExitCode {
    let p = Probe::here();
    println!("{}", serde_json::to_string(&p).unwrap_or_default());
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_and_level_parse_with_clear_errors() {
        assert_eq!("none".parse::<Net>().unwrap(), Net::None);
        assert_eq!("443, 8080".parse::<Net>().unwrap(), Net::Ports(vec![443, 8080]));
        assert!("443,http".parse::<Net>().unwrap_err().contains("\"http\""));
        assert_eq!("strict".parse::<Level>().unwrap(), Level::Strict);
        assert!("hard".parse::<Level>().is_err());
    }

    #[test]
    fn the_description_says_what_is_in_force() {
        let p = Probe {
            namespaces: true,
            namespaces_error: None,
            landlock: 7,
            seccomp: true,
        };
        assert_eq!(
            p.describe(Level::Auto, &Net::Host),
            "user+mount+pid+ipc+uts namespaces, landlock v7, seccomp, net: host"
        );
        let weak = Probe {
            landlock: 3,
            ..Probe::default()
        };
        assert!(weak
            .describe(Level::Auto, &Net::Ports(vec![443]))
            .contains("not enforced"));
        assert_eq!(weak.missing().len(), 2);
    }
}
