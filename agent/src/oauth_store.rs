//! The MCP servers' sign-ins kept across restarts (`.aegis/mcp-oauth.json`, mode 0600):
//! the clients registered with each authorization server, by issuer, and each server's
//! tokens, by the server's name.
//!
//! A grant is sent only to the URL it was given for: a server whose `url` changed in
//! agent.json (by its operator or by the model, which can write it) signs in again, so
//! the tokens never go where the user did not allow.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Largest file read.
const CAP: u64 = 1024 * 1024;

/// A client of an authorization server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub issuer: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub redirect_uri: String,
    /// How the registration said the client authenticates (`client_secret_post`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
}

/// What a sign-in gave for one server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The server's URL it is for.
    pub resource: String,
    pub issuer: String,
    pub token_endpoint: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("resource", &self.resource)
            .field("issuer", &self.issuer)
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Grant {
    /// Whether its access token ends within a minute (an unknown end never comes).
    pub fn expiring(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now + 60)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    clients: BTreeMap<String, Client>,
    #[serde(default)]
    grants: BTreeMap<String, Grant>,
}

/// The file, read and written whole under one lock (servers sign in from several
/// threads).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Store {
    /// The store of `workspace`.
    pub fn new(workspace: &Path) -> Store {
        Store {
            path: workspace.join(".aegis/mcp-oauth.json"),
            lock: Mutex::new(()),
        }
    }

    /// The grant of server `name`, if it is for `resource`.
    pub fn grant(&self, name: &str, resource: &str) -> Option<Grant> {
        self.grant_of(name).filter(|g| g.resource == resource)
    }

    /// The grant of server `name`, whatever URL it is for (to sign out of it).
    pub fn grant_of(&self, name: &str) -> Option<Grant> {
        let _held = self.lock.lock().expect("oauth store lock");
        self.read().grants.remove(name)
    }

    /// The client registered with `issuer`.
    pub fn client(&self, issuer: &str) -> Option<Client> {
        let _held = self.lock.lock().expect("oauth store lock");
        self.read().clients.remove(issuer)
    }

    /// Keep `grant` for server `name`, or forget the server's grant (`None`).
    pub fn keep(&self, name: &str, grant: Option<&Grant>) {
        self.change(|file| match grant {
            Some(g) => drop(file.grants.insert(name.to_string(), g.clone())),
            None => drop(file.grants.remove(name)),
        });
    }

    /// Keep `client`, registered with its issuer.
    pub fn keep_client(&self, client: &Client) {
        self.change(|file| drop(file.clients.insert(client.issuer.clone(), client.clone())));
    }

    /// Read the file, change it, and write it back whole.
    fn change(&self, how: impl FnOnce(&mut File)) {
        let _held = self.lock.lock().expect("oauth store lock");
        let mut file = self.read();
        how(&mut file);
        if let Err(e) = self.write(&file) {
            log::warn!("cannot keep the MCP sign-ins in {}: {e}", self.path.display());
        }
    }

    /// The file's content; nothing when it is absent or unreadable (said in the log).
    fn read(&self) -> File {
        let text = match crate::regular::read_to_string(&self.path, CAP) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return File::default(),
            Err(e) => {
                log::warn!("cannot read {}: {e}", self.path.display());
                return File::default();
            }
        };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            log::warn!(
                "{} is not a sign-in record ({e}); starting afresh",
                self.path.display()
            );
            File::default()
        })
    }

    /// Replace the file whole, readable by the agent's user alone.
    fn write(&self, file: &File) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".mcp-oauth.json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn grant(resource: &str) -> Grant {
        Grant {
            resource: resource.into(),
            issuer: "https://auth".into(),
            token_endpoint: "https://auth/token".into(),
            access_token: "at-secret".into(),
            refresh_token: Some("rt-secret".into()),
            expires_at: Some(100),
            scope: None,
        }
    }

    #[test]
    fn grants_are_private_bound_to_their_url_and_never_printed() {
        let dir = TempDir::new("oauth-store");
        let store = Store::new(dir.path());
        let client = Client {
            issuer: "https://auth".into(),
            client_id: "c1".into(),
            client_secret: None,
            redirect_uri: "http://127.0.0.1/cb".into(),
            auth_method: None,
        };
        store.keep_client(&client);
        store.keep("linear", Some(&grant("https://mcp/a")));
        let path = dir.path().join(".aegis/mcp-oauth.json");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            Store::new(dir.path()).grant("linear", "https://mcp/a"),
            Some(grant("https://mcp/a"))
        );
        assert_eq!(
            store.grant("linear", "https://elsewhere/a"),
            None,
            "another URL gets nothing"
        );
        assert_eq!(store.client("https://auth"), Some(client));
        let shown = format!("{:?}", grant("x"));
        assert!(!shown.contains("secret"), "{shown}");
        store.keep("linear", None);
        assert_eq!(store.grant("linear", "https://mcp/a"), None);
        assert!(store.client("https://auth").is_some(), "the registration stays");
        assert!(grant("x").expiring(41) && !grant("x").expiring(39));
        // Not a record: set aside in the log, nothing read, writing still works.
        std::fs::write(&path, "[1,2").unwrap();
        assert_eq!(store.grant("linear", "https://mcp/a"), None);
        store.keep("s", Some(&grant("u")));
        assert!(store.grant("s", "u").is_some());
    }
}
