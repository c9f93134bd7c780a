//! `aegis-kit quickstart`, the README's one command: make sure a tether host answers
//! (starting `aegis-kit serve` in the background when nothing does), create `my-agent`
//! if it does not exist, passing on the LLM settings found in the environment, then chat.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether::AegisClient;

use crate::chat::{self, ChatOpts};
use crate::cli::{self, StartOpts};
use crate::CliError;

const INSTANCE: &str = "my-agent";

/// Start serve unless something answers on `socket`.
pub fn ensure_serve(socket: &Path) -> Result<bool, CliError> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Ok(false);
    }
    let home = tether::paths::aegis_home();
    fs::create_dir_all(&home).map_err(|e| CliError::Other(format!("{}: {e}", home.display())))?;
    let log_path = home.join("serve.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError::Other(format!("{}: {e}", log_path.display())))?;
    let err = log.try_clone().map_err(|e| CliError::Other(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.to_string()))?;
    Command::new(exe)
        .arg("--socket")
        .arg(socket)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0) // not killed by the terminal's Ctrl-C
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot start aegis-kit serve: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "aegis-kit serve did not come up; see {}",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("aegis-kit serve started (log: {})", log_path.display());
    Ok(true)
}

/// The quickstart flow.
pub fn run(socket: &Path) -> Result<(), CliError> {
    ensure_serve(socket)?;
    let c = AegisClient::new(socket);
    let exists = match c.request("GET", &format!("/v1/instances/{INSTANCE}"), None) {
        Ok(_) => true,
        Err(e) if e.status() == Some(404) => false,
        Err(e) => return Err(e.into()),
    };
    if !exists {
        let mut o = StartOpts {
            name: Some(INSTANCE.into()),
            kit: Some("agent".into()),
            ..Default::default()
        };
        for key in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"] {
            if let Some(v) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
                c.put_secret(key, &v)?;
                o.secrets.push(key.into());
            }
        }
        for var in [
            "OPENAI_BASE_URL",
            "ANTHROPIC_BASE_URL",
            "AEGIS_MODEL",
            "AEGIS_MAX_TOKENS",
            "AEGIS_SYSTEM_PROMPT",
        ] {
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                o.env.push((var.into(), v));
            }
        }
        if o.secrets.is_empty() && !o.env.iter().any(|(k, _)| k == "OPENAI_BASE_URL") {
            eprintln!("note: no OPENAI_API_KEY, ANTHROPIC_API_KEY or OPENAI_BASE_URL set; the agent will say what to set");
        }
        cli::instance_start(&c, &o)?;
    }
    chat::run(
        &c,
        &ChatOpts {
            instance: INSTANCE.into(),
            message: None,
            session: "local".into(),
        },
    )
}
