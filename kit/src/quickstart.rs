//! `aegis-kit quickstart`, the README's one command: make sure a tether host answers
//! (starting `aegis-kit serve` in the background when nothing does), create `my-agent`
//! if it does not exist, passing on the LLM settings found in the environment, then chat.

use std::path::Path;

use tether::AegisClient;

use crate::chat::{self, ChatOpts};
use crate::cli::{self, StartOpts};
use crate::CliError;

const INSTANCE: &str = "my-agent";

/// The quickstart flow.
pub fn run(socket: &Path) -> Result<(), CliError> {
    if crate::daemon::ensure_serve(socket)? {
        eprintln!(
            "aegis-kit serve started (log: {})",
            crate::daemon::log_file("serve").display()
        );
    }
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
            session: None,
        },
    )
}
