//! Which certificate authorities the kit's HTTPS clients trust (feature `tls`).
//!
//! By default the Mozilla roots built into the binary, so a small image without
//! `ca-certificates` still reaches its model and Telegram. `SSL_CERT_FILE` (a PEM bundle)
//! and `SSL_CERT_DIR` (`:`-separated folders of PEM files) replace them, as they do for Go
//! programs (the Go kit), OpenSSL and curl: a private CA in front of a self-hosted model, a
//! TLS-inspecting company proxy. Unlike Go, a variable that names nothing usable is an
//! error at start-up, not a silent fall-back to roots the user meant to replace.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ureq::config::ConfigBuilder;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::typestate::AgentScope;

/// Certificates installed for the process; unset means the bundled roots.
static INSTALLED: OnceLock<Arc<Vec<Certificate<'static>>>> = OnceLock::new();

/// Roots read from `SSL_CERT_FILE` and `SSL_CERT_DIR`.
#[derive(Debug)]
pub struct Trust {
    certs: Vec<Certificate<'static>>,
    sources: Vec<String>,
}

/// A trust variable that cannot be used.
#[derive(Debug)]
pub enum TrustError {
    /// A file or folder it names cannot be read.
    Read {
        /// `SSL_CERT_FILE` or `SSL_CERT_DIR`.
        var: &'static str,
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds a PEM block that does not decode.
    Pem {
        /// `SSL_CERT_FILE` or `SSL_CERT_DIR`.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Nothing it names holds a certificate.
    Empty {
        /// `SSL_CERT_FILE` or `SSL_CERT_DIR`.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustError::Read { var, path, source } => {
                write!(f, "{var}: cannot read {}: {source}", path.display())
            }
            TrustError::Pem { var, path, message } => {
                write!(f, "{var}: {} is not valid PEM: {message}", path.display())
            }
            TrustError::Empty { var, value } => {
                write!(
                    f,
                    "{var}={value} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                )
            }
        }
    }
}

impl std::error::Error for TrustError {}

impl Trust {
    /// Roots from the environment; `None` when neither variable is set (or both are empty).
    pub fn from_env() -> Result<Option<Trust>, TrustError> {
        Trust::from_vars(
            std::env::var_os("SSL_CERT_FILE"),
            std::env::var_os("SSL_CERT_DIR"),
        )
    }

    /// Roots from the values of `SSL_CERT_FILE` and `SSL_CERT_DIR`.
    pub fn from_vars(file: Option<OsString>, dir: Option<OsString>) -> Result<Option<Trust>, TrustError> {
        let file = file.filter(|v| !v.is_empty());
        let dir = dir.filter(|v| !v.is_empty());
        if file.is_none() && dir.is_none() {
            return Ok(None);
        }
        let mut trust = Trust {
            certs: Vec::new(),
            sources: Vec::new(),
        };
        let mut seen = HashSet::new();
        if let Some(file) = file {
            let path = PathBuf::from(&file);
            let bytes = std::fs::read(&path).map_err(|source| TrustError::Read {
                var: "SSL_CERT_FILE",
                path: path.clone(),
                source,
            })?;
            let added = trust.add_pem("SSL_CERT_FILE", &path, &bytes, &mut seen)?;
            if added == 0 {
                return Err(TrustError::Empty {
                    var: "SSL_CERT_FILE",
                    value: path.display().to_string(),
                });
            }
            trust.sources.push(format!("SSL_CERT_FILE={}", path.display()));
        }
        if let Some(dirs) = dir {
            let before = trust.certs.len();
            for folder in std::env::split_paths(&dirs).filter(|p| !p.as_os_str().is_empty()) {
                trust.add_folder(&folder, &mut seen)?;
            }
            let value = dirs.to_string_lossy().into_owned();
            if trust.certs.len() == before {
                return Err(TrustError::Empty {
                    var: "SSL_CERT_DIR",
                    value,
                });
            }
            trust.sources.push(format!("SSL_CERT_DIR={value}"));
        }
        Ok(Some(trust))
    }

    /// How many distinct certificates were read.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether none were (never true of a `Trust` `from_vars` returns).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Where they came from, for the start-up log (`SSL_CERT_FILE=/etc/ssl/ca.pem`).
    pub fn sources(&self) -> String {
        self.sources.join(", ")
    }

    /// Make these the roots of every client [`crate::http::agent_config`] builds from now on.
    /// The first call wins; a process installs its trust once, at start-up.
    pub fn install(self) {
        let _ = INSTALLED.set(Arc::new(self.certs));
    }

    /// Every regular file of `folder` (symlinks followed, as OpenSSL's hashed links are).
    /// Files that are not PEM certificates (a README, a CRL) are skipped.
    fn add_folder(&mut self, folder: &Path, seen: &mut HashSet<Vec<u8>>) -> Result<(), TrustError> {
        let read_err = |path: &Path, source| TrustError::Read {
            var: "SSL_CERT_DIR",
            path: path.to_path_buf(),
            source,
        };
        let entries = std::fs::read_dir(folder).map_err(|e| read_err(folder, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| read_err(folder, e))?.path();
            if path.is_file() {
                paths.push(path);
            }
        }
        paths.sort_unstable(); // paths are unique: a stable sort is only more code
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
            // A folder may hold other files, even non-UTF-8 ones; only its certificates count.
            let _ = self.add_pem("SSL_CERT_DIR", &path, &bytes, seen);
        }
        Ok(())
    }

    /// Add the certificates of one PEM file; how many were new.
    fn add_pem(
        &mut self,
        var: &'static str,
        path: &Path,
        bytes: &[u8],
        seen: &mut HashSet<Vec<u8>>,
    ) -> Result<usize, TrustError> {
        let mut added = 0;
        for item in ureq::tls::parse_pem(bytes) {
            let item = item.map_err(|e| TrustError::Pem {
                var,
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            if let PemItem::Certificate(cert) = item {
                if seen.insert(cert.der().to_vec()) {
                    self.certs.push(cert);
                    added += 1;
                }
            }
        }
        Ok(added)
    }
}

/// Read the environment's trust, install it and log what is trusted; nothing to do (the
/// bundled roots) when neither variable is set.
pub fn install_from_env() -> Result<(), TrustError> {
    if let Some(trust) = Trust::from_env()? {
        log::info!(
            "trusting {} certificate{} from {} instead of the bundled roots",
            trust.len(),
            if trust.len() == 1 { "" } else { "s" },
            trust.sources()
        );
        trust.install();
    }
    Ok(())
}

/// Give `builder` the installed roots, if any.
pub(crate) fn configure(builder: ConfigBuilder<AgentScope>) -> ConfigBuilder<AgentScope> {
    match INSTALLED.get() {
        Some(certs) => builder.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::clone(certs)))
                .build(),
        ),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("tether-trust-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The test CAs and server certificate `tests/fixtures/tls/make.sh` made.
    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    /// The DER of the one certificate in a fixture.
    fn der(name: &str) -> Vec<u8> {
        match ureq::tls::parse_pem(fixture(name).as_bytes()).next() {
            Some(Ok(PemItem::Certificate(c))) => c.der().to_vec(),
            _ => panic!("{name} holds no certificate"),
        }
    }

    fn vars(file: Option<&Path>, dir: Option<&str>) -> Result<Option<Trust>, TrustError> {
        Trust::from_vars(file.map(OsString::from), dir.map(OsString::from))
    }

    #[test]
    fn unset_or_empty_variables_keep_the_bundled_roots() {
        assert!(vars(None, None).unwrap().is_none());
        assert!(Trust::from_vars(Some("".into()), Some("".into()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_bundle_file_and_folders_are_read_and_duplicates_counted_once() {
        let s = Scratch::new("read");
        let bundle = s.0.join("bundle.pem");
        let (ca, other, server) = (
            fixture("ca.pem"),
            fixture("other-ca.pem"),
            fixture("localhost.pem"),
        );
        std::fs::write(&bundle, format!("# comment\n{ca}{other}")).unwrap();
        let d1 = s.0.join("d1");
        let d2 = s.0.join("d2");
        std::fs::create_dir_all(&d1).unwrap();
        std::fs::create_dir_all(&d2).unwrap();
        std::fs::write(d1.join("a.pem"), &other).unwrap();
        std::fs::write(d1.join("README"), "not a certificate").unwrap();
        std::fs::write(d1.join("binary.der"), [0xff, 0x00, 0x30, 0x82]).unwrap();
        std::fs::write(d2.join("b.crt"), &server).unwrap();
        std::os::unix::fs::symlink(d2.join("b.crt"), d2.join("5ad8a5d6.0")).unwrap();

        let t = vars(Some(&bundle), None).unwrap().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.sources(), format!("SSL_CERT_FILE={}", bundle.display()));

        let dirs = format!("{}:{}", d1.display(), d2.display());
        let t = vars(Some(&bundle), Some(&dirs)).unwrap().unwrap();
        let ders: Vec<Vec<u8>> = t.certs.iter().map(|c| c.der().to_vec()).collect();
        assert_eq!(ders, [der("ca.pem"), der("other-ca.pem"), der("localhost.pem")]);
        assert!(t.sources().ends_with(&format!("SSL_CERT_DIR={dirs}")));
    }

    #[test]
    fn a_variable_that_names_nothing_usable_is_an_error_naming_it() {
        let s = Scratch::new("errors");
        let missing = s.0.join("missing.pem");
        let e = vars(Some(&missing), None).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Read {
                    var: "SSL_CERT_FILE",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let key_only = s.0.join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = vars(Some(&key_only), None).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Empty {
                    var: "SSL_CERT_FILE",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("no PEM certificate"), "{e}");

        let broken = s.0.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = vars(Some(&broken), None).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Pem {
                    var: "SSL_CERT_FILE",
                    ..
                }
            ),
            "{e:?}"
        );

        let empty_dir = s.0.join("empty");
        std::fs::create_dir_all(&empty_dir).unwrap();
        let e = vars(None, Some(empty_dir.to_str().unwrap())).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Empty {
                    var: "SSL_CERT_DIR",
                    ..
                }
            ),
            "{e:?}"
        );

        let e = vars(None, Some(missing.to_str().unwrap())).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Read {
                    var: "SSL_CERT_DIR",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
