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
}

impl Registry {
    /// Registry under `state_dir`.
    pub fn new(state_dir: &Path) -> Registry {
        Registry {
            dir: state_dir.join("instances"),
        }
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
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<InstanceDef>(&b).map_err(|e| e.to_string()))
            {
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
        fs::create_dir_all(dir.join("workspace"))?;
        tether::fsutil::replace_synced(
            &dir.join("instance.json"),
            &serde_json::to_vec_pretty(def).expect("def serialises"),
        )
    }

    /// Delete the instance's folder, workspace included.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.instance_dir(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
