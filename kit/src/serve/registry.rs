//! Instance definitions, persisted one folder per instance so serve restarts find them:
//! `{state}/instances/{name}/instance.json`, beside that instance's `workspace/`,
//! `instance.log`, `tether.sock` and `pid`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `instance start` creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceDef {
    /// Handle users type (`my-agent`).
    pub name: String,
    /// Stable id, also accepted wherever a name is.
    pub id: String,
    /// argv of the process to run.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret names passed as environment variables of the same name.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Kit preset the instance was made from.
    #[serde(default)]
    pub kit: Option<String>,
    /// OCI image (recorded for parity with AegisVM; standalone instances run on the host).
    #[serde(default)]
    pub image: Option<String>,
    /// Creation time, RFC 3339.
    #[serde(default)]
    pub created_at: String,
    /// Sandbox settings that differ from serve's defaults.
    #[serde(default, skip_serializing_if = "InstanceSandbox::is_default")]
    pub sandbox: InstanceSandbox,
    /// A workspace the user chose (`--workspace`: a named one of serve's, or a folder of
    /// theirs), resolved and checked at creation ([`super::chosen_workspace`]); `None`:
    /// the instance's own, in its folder. Serve never deletes a chosen one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
}

/// An instance's own sandbox settings; `None` fields take serve's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSandbox {
    /// `auto`, `strict` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<crate::sandbox::Level>,
    /// `host`, `none` or TCP ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<crate::sandbox::Net>,
    /// Memory per process, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Processes in the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_procs: Option<u64>,
}

impl InstanceDef {
    /// The workspace it runs in, given its folder `dir`: the one chosen for it, else its
    /// own.
    pub fn workspace_in(&self, dir: &Path) -> PathBuf {
        self.workspace.clone().unwrap_or_else(|| dir.join(WORKSPACE))
    }
}

impl InstanceSandbox {
    fn is_default(&self) -> bool {
        *self == InstanceSandbox::default()
    }
}

/// Check an instance name: 1–63 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid instance name {:?}: use 1-63 letters, digits, '_', '.', '-'",
            name.chars().take(64).collect::<String>()
        ))
    }
}

/// The instances folder.
#[derive(Debug, Clone)]
pub struct Registry {
    /// `{state}/instances`.
    dir: PathBuf,
    /// `{state}/workspaces`: the named workspaces (`--workspace NAME`).
    named: PathBuf,
}

impl Registry {
    /// Registry under `state_dir`.
    pub fn new(state_dir: &Path) -> Registry {
        Registry {
            dir: state_dir.join("instances"),
            named: state_dir.join("workspaces"),
        }
    }

    /// Where the named workspace `name` (already checked with [`valid_name`]) lives.
    pub fn named_workspace(&self, name: &str) -> PathBuf {
        self.named.join(name)
    }

    /// The workspace `def` runs in: the one chosen for it, else its own.
    pub fn workspace_of(&self, def: &InstanceDef) -> PathBuf {
        def.workspace_in(&self.instance_dir(&def.name))
    }

    /// Folder of instance `name`.
    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every readable definition; unreadable ones are logged and skipped.
    pub fn load_all(&self) -> Vec<InstanceDef> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut defs = Vec::new();
        for e in entries.flatten() {
            let path = e.path().join("instance.json");
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // What a removed instance left: its workspace alone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    log::warn!("skipping {}: {e}", path.display());
                    continue;
                }
            };
            match serde_json::from_slice::<InstanceDef>(&bytes) {
                Ok(d) => defs.push(d),
                Err(e) => log::warn!("skipping {}: {e}", path.display()),
            }
        }
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// Write `def` (atomically: temp file, then rename).
    pub fn save(&self, def: &InstanceDef) -> io::Result<()> {
        let dir = self.instance_dir(&def.name);
        fs::create_dir_all(self.workspace_of(def))?;
        fs::create_dir_all(&dir)?;
        tether::fsutil::replace_synced(
            &dir.join("instance.json"),
            &serde_json::to_vec_pretty(def).expect("def serialises"),
        )
    }

    /// The instance's own workspace, on the host.
    pub fn workspace(&self, name: &str) -> PathBuf {
        self.instance_dir(name).join(WORKSPACE)
    }

    /// The workspace a removed instance `name` left, if there is one (a new instance of
    /// that name takes it up).
    pub fn kept_workspace(&self, name: &str) -> Option<PathBuf> {
        let dir = self.instance_dir(name);
        let workspace = self.workspace(name);
        (!dir.join("instance.json").exists() && workspace.is_dir()).then_some(workspace)
    }

    /// The workspaces removed instances left, by instance name.
    pub fn kept_workspaces(&self) -> Vec<(String, PathBuf)> {
        let names = folder_names(&self.dir);
        names
            .into_iter()
            .filter_map(|n| self.kept_workspace(&n).map(|w| (n, w)))
            .collect()
    }

    /// The named workspaces (`--workspace NAME`), by name.
    pub fn named_workspaces(&self) -> Vec<(String, PathBuf)> {
        folder_names(&self.named)
            .into_iter()
            .map(|n| {
                let path = self.named_workspace(&n);
                (n, path)
            })
            .collect()
    }

    /// Delete the instance's files. Its workspace (conversations, memories, tasks, the
    /// agent's files) is kept unless `purge`: a user who removes an instance to change
    /// its settings must not lose them. `instance.json` goes last, so a crash midway
    /// leaves an instance that is still there, not half of one.
    pub fn remove(&self, name: &str, purge: bool) -> io::Result<()> {
        let dir = self.instance_dir(name);
        if purge {
            return match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let entries = match fs::read_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name == WORKSPACE || name == "instance.json" {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        match fs::remove_file(dir.join("instance.json")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Gone unless it keeps a workspace (an instance with a chosen one has none here).
        let _ = fs::remove_dir(&dir);
        Ok(())
    }
}

/// The names of the folders in `dir` that could be an instance's or a workspace's, sorted.
fn folder_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_name(n).is_ok())
        .collect();
    names.sort_unstable();
    names
}

/// The workspace's folder name inside an instance's.
const WORKSPACE: &str = "workspace";

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_e2e::proc::temp_dir;

    fn def(name: &str) -> InstanceDef {
        InstanceDef {
            name: name.into(),
            id: format!("inst-{name}"),
            command: vec!["aegis-agent".into()],
            env: BTreeMap::new(),
            secrets: Vec::new(),
            kit: None,
            image: None,
            created_at: String::new(),
            sandbox: InstanceSandbox::default(),
            workspace: None,
        }
    }

    #[test]
    fn a_removed_instance_leaves_its_workspace_alone_and_purge_takes_everything() {
        let state = temp_dir("registry-remove");
        let r = Registry::new(&state);
        r.save(&def("a")).unwrap();
        let dir = r.instance_dir("a");
        fs::create_dir_all(dir.join("egress")).unwrap();
        fs::write(dir.join("egress/1.log"), "1\t{}\n").unwrap();
        fs::write(dir.join("instance.log"), "boot\n").unwrap();
        fs::create_dir_all(r.workspace("a").join("sessions")).unwrap();
        fs::write(r.workspace("a").join("sessions/x.jsonl"), "{}\n").unwrap();
        assert_eq!(r.kept_workspace("a"), None, "a live instance's is not kept");

        r.remove("a", false).unwrap();
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["workspace"], "only the workspace stays");
        assert!(r.workspace("a").join("sessions/x.jsonl").is_file());
        assert_eq!(r.kept_workspace("a"), Some(r.workspace("a")));
        assert!(r.load_all().is_empty(), "what is left is no instance");

        r.save(&def("a")).unwrap();
        assert_eq!(r.load_all(), [def("a")], "a new one of that name takes it up");
        assert!(r.workspace("a").join("sessions/x.jsonl").is_file());

        r.remove("a", false).unwrap();
        assert_eq!(r.kept_workspaces(), [("a".to_string(), r.workspace("a"))]);
        fs::create_dir_all(r.named_workspace("shared")).unwrap();
        assert_eq!(
            r.named_workspaces(),
            [("shared".to_string(), r.named_workspace("shared"))]
        );
        r.save(&def("a")).unwrap();
        assert!(r.kept_workspaces().is_empty(), "taken up again");
        r.remove("a", true).unwrap();
        assert!(!dir.exists());
        r.remove("a", true).unwrap();
        r.remove("a", false).unwrap();
    }
}
