//! The last steps before an instance's program execs, in this order: resource limits,
//! Landlock, capabilities dropped for good, `no_new_privs`, then the seccomp filter
//! (after which the syscalls it denies are gone, `execve` included in none of them).

use std::collections::BTreeMap;
use std::fmt;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::{Net, Policy, Probe};

/// A confinement step that failed.
#[derive(Debug)]
pub struct ConfineError {
    /// What failed and why.
    pub message: String,
    /// The program must not run (a layer that was asked for would be missing silently).
    pub fatal: bool,
}

impl fmt::Display for ConfineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(message: impl Into<String>, fatal: bool) -> ConfineError {
    ConfineError {
        message: message.into(),
        fatal,
    }
}

/// Confine this process for `policy`. Non-fatal problems are collected and reported in
/// one error after every other layer was still applied.
pub fn apply(policy: &Policy, probe: &Probe, namespaced: bool) -> Result<(), ConfineError> {
    let mut problems = Vec::new();
    if let Err(e) = limits(policy) {
        problems.push(e);
    }
    if probe.landlock > 0 {
        if let Err(e) = landlock(policy) {
            problems.push(e.message);
        }
    }
    drop_capabilities(namespaced).map_err(|e| fail(e, true))?;
    // SAFETY: prctl on this process only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(fail(
            format!("no_new_privs: {}", std::io::Error::last_os_error()),
            true,
        ));
    }
    if probe.seccomp {
        seccomp().map_err(|e| fail(e, true))?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(problems.join("; "), false))
    }
}

/// `setrlimit`'s resource type: glibc and musl spell it differently.
#[cfg(target_env = "musl")]
type Resource = libc::c_int;
#[cfg(not(target_env = "musl"))]
type Resource = libc::__rlimit_resource_t;

fn limits(policy: &Policy) -> Result<(), String> {
    let l = &policy.limits;
    let mib = 1024 * 1024;
    let set = |res: Resource, v: u64, name: &str| {
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: setrlimit on this process with a valid struct.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            Err(format!("{name}: {}", std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    let results = [
        set(libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        set(libc::RLIMIT_NOFILE, l.max_files, "RLIMIT_NOFILE"),
        set(libc::RLIMIT_FSIZE, l.max_file_mb * mib, "RLIMIT_FSIZE"),
        set(libc::RLIMIT_NPROC, l.max_procs, "RLIMIT_NPROC"),
        set(libc::RLIMIT_DATA, l.memory_mb * mib, "RLIMIT_DATA"),
    ];
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("limits: {}", errors.join(", ")))
    }
}

/// Landlock: read and execute anywhere the view shows, write only in the workspace,
/// the private temporary folders and /dev; TCP connections only to allowed ports.
fn landlock(policy: &Policy) -> Result<(), ConfineError> {
    let abi = ABI::V5;
    let err = |e: landlock::RulesetError| fail(format!("landlock: {e}"), false);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if let Net::Ports(_) = policy.net {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    let rule = |path: &std::path::Path, access| -> Option<PathBeneath<PathFd>> {
        PathFd::new(path).ok().map(|fd| PathBeneath::new(fd, access))
    };
    let read = AccessFs::from_read(abi);
    let mut rules = vec![rule(std::path::Path::new("/"), read)];
    for w in [
        policy.workspace.as_path(),
        "/tmp".as_ref(),
        "/var/tmp".as_ref(),
        "/dev".as_ref(),
    ] {
        rules.push(rule(w, AccessFs::from_all(abi)));
    }
    if let Some(sock) = &policy.tether {
        rules.push(rule(sock, AccessFs::from_file(abi)));
    }
    created = created
        .add_rules(rules.into_iter().flatten().map(Ok::<_, landlock::RulesetError>))
        .map_err(err)?;
    if let Net::Ports(ports) = &policy.net {
        for p in ports {
            created = created
                .add_rule(NetPort::new(*p, AccessNet::ConnectTcp))
                .map_err(err)?;
        }
    }
    created.restrict_self().map_err(err)?;
    Ok(())
}

/// No capabilities, now or after exec, even for uid 0 (serve may run as root, and the
/// user namespace maps it to itself).
fn drop_capabilities(namespaced: bool) -> Result<(), String> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    let last_cap: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // SAFETY: prctl/capset act on this process; the capset structs are valid.
    unsafe {
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        let have_setpcap = libc::prctl(libc::PR_CAPBSET_READ, 8 /* CAP_SETPCAP */) == 1;
        if libc::prctl(libc::PR_SET_SECUREBITS, bits) != 0 && (namespaced || have_setpcap) {
            // Without CAP_SETPCAP (an unprivileged serve without namespaces) there are no
            // capabilities to lose; with it, failing here would leave root's powers.
            if libc::getuid() == 0 {
                return Err(format!("securebits: {}", std::io::Error::last_os_error()));
            }
        }
        for cap in 0..=last_cap {
            libc::prctl(libc::PR_CAPBSET_DROP, cap);
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) != 0 {
            return Err(format!("capset: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Syscalls an instance never needs and that would reach past its walls: mounts, other
/// namespaces, tracing, kernel modules and keys, BPF, perf, clock and reboot.
fn denied() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_perf_event_open,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_syslog,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_quotactl,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib]);
    v
}

fn arch() -> seccompiler::TargetArch {
    #[cfg(target_arch = "aarch64")]
    return seccompiler::TargetArch::aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    seccompiler::TargetArch::x86_64
}

/// `clone` and `unshare` calls asking for a new namespace.
fn namespace_flag_rules(arg: u8) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let flags = [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWTIME,
    ];
    flags
        .iter()
        .map(|&f| {
            let f = f as u64;
            SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(f),
                f,
            )?])
        })
        .collect()
}

fn seccomp() -> Result<(), String> {
    let build = || -> Result<(BpfProgram, BpfProgram), seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            denied().into_iter().map(|nr| (nr, vec![])).collect();
        rules.insert(libc::SYS_unshare, namespace_flag_rules(0)?);
        rules.insert(libc::SYS_clone, namespace_flag_rules(0)?);
        let deny = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch(),
        )?;
        // clone3 passes its flags in memory a filter cannot read: report it missing, and
        // the C library falls back to clone, whose flags the filter above checks.
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, vec![])]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch(),
        )?;
        Ok((deny.try_into()?, clone3.try_into()?))
    };
    let (deny, clone3) = build().map_err(|e| format!("seccomp filter: {e}"))?;
    seccompiler::apply_filter(&deny).map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter(&clone3).map_err(|e| format!("seccomp: {e}"))
}
