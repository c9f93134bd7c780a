//! `aegis-agent`: the agent runtime inside an Aegis VM (or beside `aegis-kit serve`).
//!
//! Threads, data flowing one way:
//! ingress (harness HTTP listener, or direct tether reader) → router → one worker per
//! session (each with an LLM reader thread while it streams) → egress (harness poster,
//! or direct tether writer).

mod config;
mod direct;
mod egress;
mod harness;
mod llm;
mod router;
mod session;
mod sse;
mod worker;

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::unbounded;

use config::{Action, Mode};
use llm::Llm;
use session::SessionStore;
use worker::Shared;

fn main() -> ExitCode {
    let action = match config::from_args_and_env(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aegis-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match action {
        Action::Print(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Action::Run(c) => c,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    log::info!("aegis-agent starting");
    match &config.provider {
        Some(p) => log::info!("LLM provider: {} (model {}, {})", p.kind, p.model, p.base_url),
        None => log::warn!("LLM provider: none (set ANTHROPIC_API_KEY or OPENAI_API_KEY)"),
    }

    let (ingress_tx, ingress_rx) = unbounded();
    let (egress_tx, egress_rx) = unbounded();
    let shared = Arc::new(Shared {
        llm: config.provider.clone().map(Llm::new),
        sessions: SessionStore::new(&config.workspace),
        system_prompt: config.system_prompt.clone(),
        budget: config.budget,
        egress: egress_tx,
    });
    let router = match thread::Builder::new()
        .name("router".into())
        .spawn(move || router::run(ingress_rx, shared))
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the router thread: {e}");
            return ExitCode::FAILURE;
        }
    };

    match &config.mode {
        Mode::Harness { listen, harness } => {
            let server = match tiny_http::Server::http(listen.as_str()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("cannot listen on {listen}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            log::info!("agent listening on {listen}");
            let harness = harness.clone();
            let spawned = thread::Builder::new()
                .name("egress".into())
                .spawn(move || egress::run(egress_rx, &harness));
            if let Err(e) = spawned {
                log::error!("cannot start the egress thread: {e}");
                return ExitCode::FAILURE;
            }
            harness::serve(server, ingress_tx);
        }
        Mode::Direct(addr) => {
            log::info!("agent dialing tether at {addr}");
            direct::run(addr, egress_rx, ingress_tx);
        }
    }
    let _ = router.join();
    ExitCode::SUCCESS
}
