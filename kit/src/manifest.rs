//! The kit manifest (`kit/agent.json`, installed as `~/.aegis/kits/agent.json`): the
//! schema AegisVM reads to find a kit's daemons, the binaries injected into the guest
//! image, and the defaults of `instance start --kit NAME`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// The manifest shipped inside this binary.
pub const EMBEDDED_AGENT: &str = include_str!("../agent.json");

/// One kit manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Kit name, used by `--kit NAME`.
    pub name: String,
    /// Kit version.
    pub version: String,
    /// One line for `kit list`.
    #[serde(default)]
    pub description: String,
    /// Host daemons `up` starts (when their config exists) and `down` stops.
    #[serde(default)]
    pub daemons: Vec<String>,
    /// Daemons run once per instance of this kit (current AegisVM), with
    /// `AEGIS_INSTANCE`; serve starts one when its per-instance config exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_daemons: Vec<String>,
    /// Guest image settings.
    #[serde(default)]
    pub image: Image,
    /// Defaults for `instance start --kit NAME`.
    #[serde(default)]
    pub defaults: Defaults,
}

/// Guest image settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// OCI base image.
    #[serde(default)]
    pub base: Option<String>,
    /// Kit binaries placed at `/usr/bin/NAME` in the image overlay.
    #[serde(default)]
    pub inject: Vec<String>,
}

/// Instance defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// argv of the instance's process.
    #[serde(default)]
    pub command: Vec<String>,
    /// Spawn capabilities granted to the instance (passed through to AegisVM).
    #[serde(default)]
    pub capabilities: serde_json::Value,
}

/// Where installed manifests live: `~/.aegis/kits`.
pub fn kits_dir() -> PathBuf {
    tether::paths::aegis_home().join("kits")
}

/// Parse a manifest file, naming the file and the problem on failure.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, CliError> {
    let m: Manifest = serde_json::from_str(text)
        .map_err(|e| CliError::Other(format!("{}: invalid kit manifest: {e}", path.display())))?;
    if m.name.is_empty() {
        return Err(CliError::Other(format!("{}: \"name\" is empty", path.display())));
    }
    Ok(m)
}

/// The manifest of kit `name`: the installed one, else the embedded one for `agent`.
pub fn load_installed(name: &str) -> Result<Manifest, CliError> {
    let path = kits_dir().join(format!("{name}.json"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(_) if name == "agent" => parse(Path::new("(embedded agent.json)"), EMBEDDED_AGENT),
        Err(e) => Err(CliError::Other(format!(
            "kit {name:?} is not installed ({}: {e}); see `aegis-kit list`",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_is_valid_and_complete() {
        let m = parse(Path::new("agent.json"), EMBEDDED_AGENT).unwrap();
        assert_eq!(m.name, "agent");
        assert_eq!(m.daemons, vec!["aegis-gateway"]);
        assert_eq!(m.instance_daemons, vec!["aegis-gateway"]);
        assert_eq!(m.image.base.as_deref(), Some("python:3.12-alpine"));
        assert_eq!(m.image.inject, vec!["aegis-agent"]);
        assert_eq!(m.defaults.command, vec!["aegis-agent"]);
        assert_eq!(m.defaults.capabilities["spawn"], true);
    }

    #[test]
    fn broken_manifest_names_file_and_problem() {
        let e = parse(Path::new("/k/x.json"), "{\"name\": 3}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/k/x.json") && e.contains("invalid kit manifest"),
            "{e}"
        );
    }
}
