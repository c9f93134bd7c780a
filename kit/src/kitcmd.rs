//! Kit packaging commands: `install`, `uninstall`, `list`, `up` and `down`, the
//! standalone counterparts of `make install-kit`, `aegis kit list` and `aegis up/down`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::daemon;
use crate::manifest::{self, Manifest, EMBEDDED_AGENT};
use crate::CliError;

/// The binaries the kit installs.
pub const BINARIES: [&str; 3] = ["aegis-agent", "aegis-gateway", "aegis-kit"];

/// `install [--prefix DIR]`: copy the kit binaries from beside this executable into
/// `DIR/bin` and the manifest into `~/.aegis/kits/agent.json`. Safe to repeat: files are
/// replaced atomically and identical ones are left alone.
pub fn install(prefix: &Path) -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.to_string()))?;
    let from = exe
        .parent()
        .ok_or_else(|| CliError::Other("no folder for this executable".into()))?;
    let bin = prefix.join("bin");
    fs::create_dir_all(&bin).map_err(|e| CliError::Other(format!("{}: {e}", bin.display())))?;
    for name in BINARIES {
        let src = from.join(name);
        let dst = bin.join(name);
        let data = fs::read(&src).map_err(|e| {
            CliError::Other(format!(
                "{}: {e} (build the kit first: make install-kit)",
                src.display()
            ))
        })?;
        if fs::read(&dst).is_ok_and(|old| old == data) {
            println!("{}: up to date", dst.display());
            continue;
        }
        replace(&dst, &data, 0o755)?;
        println!("{}: installed", dst.display());
    }
    let kits = manifest::kits_dir();
    fs::create_dir_all(&kits).map_err(|e| CliError::Other(format!("{}: {e}", kits.display())))?;
    let m = kits.join("agent.json");
    if fs::read(&m).is_ok_and(|old| old == EMBEDDED_AGENT.as_bytes()) {
        println!("{}: up to date", m.display());
    } else {
        replace(&m, EMBEDDED_AGENT.as_bytes(), 0o644)?;
        println!("{}: installed", m.display());
    }
    if !std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == bin)) {
        println!("note: add {} to PATH", bin.display());
    }
    Ok(())
}

fn replace(dst: &Path, data: &[u8], mode: u32) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dst.with_extension("aegis-tmp");
    let io = |e: std::io::Error| CliError::Other(format!("{}: {e}", dst.display()));
    fs::write(&tmp, data).map_err(io)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io)?;
    // Rename, so a running copy of the old binary keeps working.
    fs::rename(&tmp, dst).map_err(io)
}

/// `uninstall [--prefix DIR]`: remove what `install` put there.
pub fn uninstall(prefix: &Path) -> Result<(), CliError> {
    for name in BINARIES {
        let p = prefix.join("bin").join(name);
        if fs::remove_file(&p).is_ok() {
            println!("{}: removed", p.display());
        }
    }
    let m = manifest::kits_dir().join("agent.json");
    if fs::remove_file(&m).is_ok() {
        println!("{}: removed", m.display());
    }
    Ok(())
}

/// One row of `list`.
#[derive(Debug)]
pub struct KitRow {
    /// Kit name (the file stem for broken manifests).
    pub name: String,
    /// Version, `v`-prefixed.
    pub version: String,
    /// `ok`, `missing: a, b` or `broken: why`.
    pub status: String,
    /// Description.
    pub description: String,
}

/// Status of every installed manifest.
pub fn rows() -> Vec<KitRow> {
    let dir = manifest::kits_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| manifest::parse(&path, &t).map_err(|e| e.to_string()))
            {
                Ok(m) => row(&m),
                Err(e) => KitRow {
                    name: stem,
                    version: "-".into(),
                    status: format!("broken: {e}"),
                    description: String::new(),
                },
            }
        })
        .collect()
}

fn row(m: &Manifest) -> KitRow {
    let missing: Vec<&str> = m
        .daemons
        .iter()
        .chain(m.image.inject.iter())
        .map(String::as_str)
        .filter(|b| daemon::find_binary(b).is_none())
        .collect();
    KitRow {
        name: m.name.clone(),
        version: if m.version.starts_with('v') {
            m.version.clone()
        } else {
            format!("v{}", m.version)
        },
        status: if missing.is_empty() {
            "ok".into()
        } else {
            format!("missing: {}", missing.join(", "))
        },
        description: m.description.clone(),
    }
}

/// `list`: `NAME VERSION STATUS DESCRIPTION`.
pub fn list() -> Result<(), CliError> {
    let rows = rows();
    println!("{:<12} {:<10} {:<10} DESCRIPTION", "NAME", "VERSION", "STATUS");
    if rows.is_empty() {
        eprintln!(
            "no kits installed in {} (run `aegis-kit install`)",
            manifest::kits_dir().display()
        );
    }
    for r in rows {
        println!(
            "{:<12} {:<10} {:<10} {}",
            r.name, r.version, r.status, r.description
        );
    }
    Ok(())
}

/// `up [--no-daemons]`.
pub fn up(socket: &Path, no_daemons: bool) -> Result<(), CliError> {
    println!("aegis-kit v{}", env!("CARGO_PKG_VERSION"));
    if daemon::ensure_serve(socket)? {
        println!("aegisd: started (aegis-kit serve)");
    } else {
        println!("aegisd: already running");
    }
    if no_daemons {
        return Ok(());
    }
    let mut daemons: Vec<(String, String)> = Vec::new();
    for r in rows() {
        if r.status.starts_with("broken") {
            eprintln!("kit {}: {}", r.name, r.status);
        }
    }
    for m in installed_manifests() {
        for d in m.daemons {
            if !daemons.iter().any(|(n, _)| *n == d) {
                daemons.push((d, m.name.clone()));
            }
        }
    }
    for (name, kit) in daemons {
        up_daemon(&name, &kit, socket)?;
    }
    Ok(())
}

fn installed_manifests() -> Vec<Manifest> {
    let dir = manifest::kits_dir();
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        if let Ok(m) = fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| manifest::parse(&p, &t).map_err(|e| e.to_string()))
        {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn up_daemon(name: &str, kit: &str, socket: &Path) -> Result<(), CliError> {
    if let Some(pid) = daemon::running(name) {
        println!("{name}: already running (pid {pid})");
        return Ok(());
    }
    // The gateway needs its config; other daemons are started as they are.
    if name == "aegis-gateway" {
        let cfg = std::env::var_os("AEGIS_GATEWAY_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| tether::paths::aegis_home().join("gateway.json"));
        if !cfg.exists() {
            println!("{name}: no config (create ~/.aegis/gateway.json to enable)");
            return Ok(());
        }
    }
    let Some(bin) = daemon::find_binary(name) else {
        println!("{name}: not installed (run `aegis-kit install`)");
        return Ok(());
    };
    let sock = socket.to_string_lossy().into_owned();
    daemon::start(name, &bin, &["--socket", &sock])?;
    println!("{name}: started ({kit} kit)");
    Ok(())
}

/// `down`: stop kit daemons, then serve.
pub fn down() -> Result<(), CliError> {
    let mut names: Vec<String> = installed_manifests()
        .into_iter()
        .flat_map(|m| m.daemons)
        .collect();
    names.dedup();
    for name in names {
        if daemon::stop(&name) {
            println!("{name}: stopped");
        }
    }
    if daemon::stop("serve") {
        println!("aegisd: stopped (aegis-kit serve)");
    } else {
        println!("aegisd: not running (or not started by aegis-kit)");
    }
    Ok(())
}
