//! Secrets at rest: XChaCha20-Poly1305 with a random 32-byte key in a 0600 key file, as
//! aegisd keeps them. Each value is sealed with a fresh 24-byte nonce and the secret's
//! name as associated data, so a ciphertext cannot be moved to another name.
//! Values never reach a log line; only names are listed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Why a secret operation failed.
#[derive(Debug)]
pub enum SecretError {
    /// Reading or writing the key or secrets file failed.
    Io(PathBuf, io::Error),
    /// The key file is not 32 bytes, or a value does not decrypt with it.
    Corrupt(String),
    /// No secret of that name.
    NotFound(String),
    /// Names are `[A-Za-z0-9_.-]{1,128}`.
    BadName(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            SecretError::Corrupt(m) => write!(f, "secret store corrupt: {m}"),
            SecretError::NotFound(n) => write!(f, "secret {n:?} not found"),
            SecretError::BadName(n) => write!(f, "invalid secret name {n:?} (use letters, digits, _ . -)"),
        }
    }
}

impl std::error::Error for SecretError {}

/// Check a secret name.
pub fn valid_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SecretError::BadName(name.chars().take(64).collect()))
    }
}

/// The encrypted secret store of one serve instance.
pub struct Secrets {
    /// `secrets.json`: name → hex(nonce ‖ ciphertext).
    path: PathBuf,
    /// The cipher keyed from the key file.
    cipher: XChaCha20Poly1305,
    /// Sealed values, mirrored to `path` on every change.
    sealed: Mutex<BTreeMap<String, String>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("path", &self.path).finish()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    let io = |e| SecretError::Io(path.to_path_buf(), e);
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

impl Secrets {
    /// Open (creating if needed) the key file `dir/master.key` and `dir/secrets.json`.
    pub fn open(dir: &Path) -> Result<Secrets, SecretError> {
        fs::create_dir_all(dir).map_err(|e| SecretError::Io(dir.to_path_buf(), e))?;
        let key_path = dir.join("master.key");
        let key = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            Ok(k) => {
                return Err(SecretError::Corrupt(format!(
                    "{} holds {} bytes, not 32",
                    key_path.display(),
                    k.len()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let k = XChaCha20Poly1305::generate_key(&mut OsRng).to_vec();
                write_private(&key_path, &k)?;
                k
            }
            Err(e) => return Err(SecretError::Io(key_path, e)),
        };
        let path = dir.join("secrets.json");
        let sealed = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| SecretError::Corrupt(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(SecretError::Io(path, e)),
        };
        Ok(Secrets {
            path,
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
            sealed: Mutex::new(sealed),
        })
    }

    fn save(&self, sealed: &BTreeMap<String, String>) -> Result<(), SecretError> {
        write_private(
            &self.path,
            serde_json::to_string_pretty(sealed)
                .expect("map serialises")
                .as_bytes(),
        )
    }

    /// Store `value` under `name`.
    pub fn set(&self, name: &str, value: &str) -> Result<(), SecretError> {
        valid_name(name)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt("encryption failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        let mut sealed = self.sealed.lock().expect("secrets lock");
        sealed.insert(name.to_string(), to_hex(&blob));
        self.save(&sealed)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Result<String, SecretError> {
        valid_name(name)?;
        let sealed = self.sealed.lock().expect("secrets lock");
        let hex = sealed
            .get(name)
            .ok_or_else(|| SecretError::NotFound(name.to_string()))?;
        let blob = from_hex(hex).ok_or_else(|| SecretError::Corrupt(format!("{name}: not hex")))?;
        if blob.len() < 24 {
            return Err(SecretError::Corrupt(format!("{name}: too short")));
        }
        let (nonce, ct) = blob.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt(format!("{name}: does not decrypt with the key file")))?;
        String::from_utf8(plain).map_err(|_| SecretError::Corrupt(format!("{name}: not UTF-8")))
    }

    /// Remove `name`.
    pub fn remove(&self, name: &str) -> Result<(), SecretError> {
        valid_name(name)?;
        let mut sealed = self.sealed.lock().expect("secrets lock");
        if sealed.remove(name).is_none() {
            return Err(SecretError::NotFound(name.to_string()));
        }
        self.save(&sealed)
    }

    /// Names of all secrets.
    pub fn names(&self) -> Vec<String> {
        self.sealed
            .lock()
            .expect("secrets lock")
            .keys()
            .cloned()
            .collect()
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_encrypted_and_files_are_private() {
        let dir = std::env::temp_dir().join(format!("kit-secrets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = Secrets::open(&dir).unwrap();
        s.set("OPENAI_API_KEY", "sk-very-secret").unwrap();
        assert_eq!(s.get("OPENAI_API_KEY").unwrap(), "sk-very-secret");
        let on_disk = fs::read_to_string(dir.join("secrets.json")).unwrap();
        assert!(!on_disk.contains("sk-very-secret"));
        for f in ["master.key", "secrets.json"] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        // Reopening with the same key file reads the value back.
        let again = Secrets::open(&dir).unwrap();
        assert_eq!(again.get("OPENAI_API_KEY").unwrap(), "sk-very-secret");
        assert_eq!(again.names(), vec!["OPENAI_API_KEY"]);
        // A value moved to another name does not decrypt.
        let mut map: BTreeMap<String, String> = serde_json::from_str(&on_disk).unwrap();
        let v = map["OPENAI_API_KEY"].clone();
        map.insert("OTHER".into(), v);
        fs::write(dir.join("secrets.json"), serde_json::to_string(&map).unwrap()).unwrap();
        let moved = Secrets::open(&dir).unwrap();
        assert!(matches!(moved.get("OTHER"), Err(SecretError::Corrupt(_))));
        assert!(matches!(moved.get("NOPE"), Err(SecretError::NotFound(_))));
        assert!(matches!(moved.set("../x", "v"), Err(SecretError::BadName(_))));
        moved.remove("OTHER").unwrap();
        let _ = fs::remove_dir_all(dir);
    }
}
