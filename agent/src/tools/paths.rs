//! Workspace confinement: the one place that turns a path chosen by a model into a path
//! on disk. Every file tool goes through [`Workspace::resolve`].
//!
//! A path is accepted when, after `.`/`..` are resolved and every symlink that exists is
//! followed, it is the workspace or lies below it. Relative paths are taken from the
//! workspace; absolute ones only when they name something inside it (prompts written for
//! upstream say `/workspace/notes.md`). Comparison is by path component, so a look-alike
//! prefix (`/workspace2`, `/workspace-old`) is outside.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug)]
pub enum PathError {
    /// It leads outside the workspace (`..`, an absolute path elsewhere, a symlink).
    Outside(String),
    /// The path has a NUL byte or is otherwise unusable.
    Invalid(String),
    /// The file system failed while following it.
    Io(String, io::Error),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Outside(p) => write!(f, "{p:?} is outside the workspace"),
            PathError::Invalid(p) => write!(f, "{p:?} is not a valid path"),
            PathError::Io(p, e) => write!(f, "{p:?}: {e}"),
        }
    }
}

/// The folder the tools may touch.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// As configured (`/workspace`), for recognising absolute paths in prompts.
    given: PathBuf,
    /// The same with every symlink resolved, for the containment check.
    real: PathBuf,
}

impl Workspace {
    /// The workspace at `root`, created if missing.
    pub fn new(root: &Path) -> io::Result<Workspace> {
        std::fs::create_dir_all(root)?;
        Ok(Workspace {
            given: root.to_path_buf(),
            real: root.canonicalize()?,
        })
    }

    /// The workspace folder itself (resolved).
    pub fn root(&self) -> &Path {
        &self.real
    }

    /// `path` as the model should see it: relative to the workspace.
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.real) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    /// Resolve `path` (relative, or absolute inside the workspace) to a real path inside
    /// the workspace. The file need not exist; the folders above it that exist must lead
    /// back inside.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, PathError> {
        if path.contains('\0') {
            return Err(PathError::Invalid(path.into()));
        }
        let p = Path::new(path.trim());
        let rel = if p.is_absolute() {
            p.strip_prefix(&self.given)
                .or_else(|_| p.strip_prefix(&self.real))
                .map_err(|_| PathError::Outside(path.into()))?
        } else {
            p
        };
        // Lexical pass: `..` may not climb above the workspace.
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => parts.push(s),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(PathError::Outside(path.into()));
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(PathError::Outside(path.into())),
            }
        }
        // Physical pass: follow what exists (symlinks included) and check where it lands.
        let mut real = self.real.clone();
        for (i, part) in parts.iter().enumerate() {
            let next = real.join(part);
            match next.symlink_metadata() {
                Ok(_) => {
                    real = next.canonicalize().map_err(|e| PathError::Io(path.into(), e))?;
                    if !real.starts_with(&self.real) {
                        return Err(PathError::Outside(path.into()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    for rest in &parts[i..] {
                        real.push(rest);
                    }
                    return Ok(real);
                }
                Err(e) => return Err(PathError::Io(path.into(), e)),
            }
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(name: &str) -> (Dir, Workspace, PathBuf) {
        let base = std::env::temp_dir().join(format!("agent-paths-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let ws = base.join("workspace");
        let twin = base.join("workspace2");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::create_dir_all(&twin).unwrap();
        std::fs::write(twin.join("secret"), "s").unwrap();
        std::fs::write(ws.join("sub/a.txt"), "a").unwrap();
        let w = Workspace::new(&ws).unwrap();
        (Dir(base), w, twin)
    }

    #[test]
    fn paths_inside_resolve() {
        let (_d, w, _) = setup("inside");
        let root = w.root().to_path_buf();
        assert_eq!(w.resolve("sub/a.txt").unwrap(), root.join("sub/a.txt"));
        assert_eq!(w.resolve("./sub/../sub/a.txt").unwrap(), root.join("sub/a.txt"));
        assert_eq!(w.resolve("").unwrap(), root);
        assert_eq!(w.resolve("new/dir/file").unwrap(), root.join("new/dir/file"));
        let abs = format!("{}/sub/a.txt", root.display());
        assert_eq!(w.resolve(&abs).unwrap(), root.join("sub/a.txt"));
    }

    #[test]
    fn escapes_are_refused() {
        let (_d, w, twin) = setup("escape");
        let root = w.root().to_path_buf();
        symlink("/etc", root.join("etc-link")).unwrap();
        symlink(&twin, root.join("twin-link")).unwrap();
        symlink("../workspace2/secret", root.join("sub/rel-link")).unwrap();
        let hostile = [
            "..".to_string(),
            "../workspace2/secret".into(),
            "sub/../../workspace2/secret".into(),
            "/etc/passwd".into(),
            format!("{}/secret", twin.display()),
            format!("{}2/secret", root.display()),
            "etc-link/passwd".into(),
            "twin-link/secret".into(),
            "sub/rel-link".into(),
            "twin-link/new-file".into(),
            "a\0b".into(),
        ];
        for h in &hostile {
            assert!(w.resolve(h).is_err(), "{h} was accepted: {:?}", w.resolve(h));
        }
    }
}
