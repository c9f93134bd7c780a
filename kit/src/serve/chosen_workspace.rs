//! A workspace the user chose for an instance (`instance start --workspace NAME_OR_PATH`,
//! aegisd's `workspace` field): a bare name is one of serve's named workspaces
//! (`{state}/workspaces/NAME`), anything with a `/` or a leading `.` a folder of the
//! user's. The instance writes there with the model's commands, so a folder is refused
//! when it holds what confines instances (serve's state, the API socket, a binary serve
//! runs: replaced, it would run the model's code outside the sandbox at the next start),
//! when it lies inside serve's state, or when it overlaps another instance's workspace.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::registry::{valid_name, Registry};
use super::ApiError;

/// What no chosen workspace may hold or lie in.
pub struct Guarded<'a> {
    /// Folders instances never see (serve's state), resolved.
    pub hidden: &'a [PathBuf],
    /// Files instances never see (the API socket outside that state), resolved.
    pub hidden_files: &'a [PathBuf],
    /// The programs serve runs for instances (itself for the sandbox, the agent).
    pub binaries: &'a [PathBuf],
    /// The other instances' workspaces, by instance name.
    pub taken: &'a [(String, PathBuf)],
}

/// The workspaces chosen for the instances serve has, by instance. Serve's state is hidden
/// from every sandbox as a whole; these lie elsewhere, so each sandbox hides the others'.
#[derive(Debug, Clone, Default)]
pub struct Chosen(Arc<RwLock<BTreeMap<String, PathBuf>>>);

impl Chosen {
    /// Record (or, with `None`, forget) the workspace chosen for instance `name`.
    pub fn set(&self, name: &str, workspace: Option<&Path>) {
        let mut map = self.0.write().expect("chosen workspaces lock");
        match workspace {
            Some(w) => map.insert(name.to_string(), w.to_path_buf()),
            None => map.remove(name),
        };
    }

    /// Every chosen workspace but instance `name`'s.
    pub fn others(&self, name: &str) -> Vec<PathBuf> {
        let map = self.0.read().expect("chosen workspaces lock");
        map.iter()
            .filter(|(n, _)| *n != name)
            .map(|(_, w)| w.clone())
            .collect()
    }
}

fn refused(status: u16, message: String) -> ApiError {
    ApiError { status, message }
}

/// The folder `requested` names, resolved (no link left in it) and, once it passes every
/// check, created if missing; or why it cannot be a workspace.
pub fn resolve(requested: &str, registry: &Registry, guarded: &Guarded) -> Result<PathBuf, ApiError> {
    let named = !requested.contains('/') && !requested.starts_with('.');
    let path = if named {
        valid_name(requested).map_err(|m| refused(400, format!("workspace: {m}")))?;
        registry.named_workspace(requested)
    } else if Path::new(requested).is_absolute() {
        PathBuf::from(requested)
    } else {
        return Err(refused(
            400,
            format!("workspace {requested:?} is neither a name nor an absolute path"),
        ));
    };
    // Checked before anything is created, so a refused folder leaves nothing behind.
    let path = resolved(&path).map_err(|e| refused(400, format!("workspace {}: {e}", path.display())))?;
    if path.parent().is_none() {
        return Err(refused(400, "workspace /: the whole filesystem".into()));
    }
    if !named {
        if let Some(state) = guarded.hidden.iter().find(|h| path.starts_with(h)) {
            return Err(refused(
                400,
                format!(
                    "workspace {} is inside {}, serve's state, which instances never see \
                     (name a workspace instead: --workspace NAME)",
                    path.display(),
                    state.display()
                ),
            ));
        }
    }
    let holds = |what: &Path, why: &str| match resolution(what).into_iter().find(|p| p.starts_with(&path)) {
        Some(inside) => Err(refused(
            400,
            format!(
                "workspace {} holds {} ({why}), which an instance could then change",
                path.display(),
                inside.display()
            ),
        )),
        None => Ok(()),
    };
    for h in guarded.hidden {
        holds(h, "serve's state: secrets, keys, other instances")?;
    }
    for f in guarded.hidden_files {
        holds(f, "the API socket")?;
    }
    for b in guarded.binaries {
        holds(b, "a program serve runs for instances")?;
    }
    for (other, theirs) in guarded.taken {
        let theirs = theirs.canonicalize().unwrap_or_else(|_| theirs.clone());
        if path.starts_with(&theirs) || theirs.starts_with(&path) {
            return Err(refused(
                409,
                format!(
                    "workspace {} overlaps {}, instance {other}'s workspace",
                    path.display(),
                    theirs.display()
                ),
            ));
        }
    }
    let made = fs::create_dir_all(&path).and_then(|()| path.canonicalize());
    match made {
        Ok(real) if real == path => Ok(path),
        Ok(real) => Err(refused(
            400,
            format!(
                "workspace {} became {} while it was made",
                path.display(),
                real.display()
            ),
        )),
        Err(e) => Err(refused(400, format!("workspace {}: {e}", path.display()))),
    }
}

/// `path` as it will be once made: its deepest part that exists, links resolved, then the
/// rest as written (`..` taken back by name, which is sound: none of the rest exists, so
/// none of it is a link). A dangling link counts as existing, so it fails to resolve.
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let parts: Vec<Component> = path.components().collect();
    let mut exists = parts.len();
    while exists > 0 {
        let prefix: PathBuf = parts[..exists].iter().collect();
        if fs::symlink_metadata(&prefix).is_ok() {
            break;
        }
        exists -= 1;
    }
    let prefix: PathBuf = parts[..exists].iter().collect();
    let mut out = prefix.canonicalize()?;
    for part in &parts[exists..] {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    Ok(out)
}

/// Every file `path` is reached through: at each step its folders resolved, then, while
/// that is a link, where the link leads. Any of them inside a workspace could be replaced
/// from there (a link as much as the file it leads to).
fn resolution(path: &Path) -> Vec<PathBuf> {
    let mut seen = Vec::new();
    let mut at = path.to_path_buf();
    // The kernel's own bound on links followed.
    for _ in 0..40 {
        let (Some(parent), Some(name)) = (at.parent(), at.file_name()) else {
            break;
        };
        let here = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name);
        let next = fs::read_link(&here)
            .ok()
            .map(|to| here.parent().unwrap_or(Path::new("/")).join(to));
        seen.push(here);
        match next {
            Some(to) => at = to,
            None => break,
        }
    }
    seen
}
