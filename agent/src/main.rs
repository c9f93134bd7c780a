//! `aegis-agent`: the agent runtime inside an Aegis VM (or beside `aegis-kit serve`).
//!
//! Threads, data flowing one way:
//! ingress (harness HTTP listener, or direct tether reader) → router → one worker per
//! session (each with an LLM reader thread while it streams, and tools it runs between
//! model rounds) → egress (harness poster, or direct tether writer). Beside them: one
//! thread holding the keepalive lease while replies run, and MCP servers (a child
//! process and a reader thread each) started in the background.

mod agent_file;
mod aside;
mod asking;
mod blobs;
mod carry;
mod chat_model;
mod config;
mod context;
mod copies;
mod direct;
mod egress;
mod elicit;
mod frontmatter;
mod harness;
mod host_llm;
mod json_file;
mod keepalive;
mod limits;
mod llm;
mod mcp;
mod mcp_era;
mod mcp_http;
mod mcp_input;
mod mcp_oauth;
mod mcp_prompts;
mod mcp_resources;
mod memory;
mod memory_command;
mod native_search;
mod oauth_discovery;
mod oauth_store;
mod prompt_cache;
mod recap;
mod regular;
mod responses;
mod restart;
mod router;
mod search_scope;
mod session;
mod shown;
mod skills;
mod sse;
mod successor;
#[cfg(test)]
mod testutil;
mod text;
mod think;
mod tools;
mod transcribe;
mod uplink;
mod usage;
mod worker;

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::unbounded;

use config::{Action, Mode};
use host_llm::{HostLink, Routes};
use keepalive::Keepalive;
use llm::Llm;
use mcp::McpServers;
use memory::MemoryStore;
use session::SessionStore;
use tools::paths::Workspace;
use tools::Toolbox;
use uplink::{TetherLink, Uplink};
use worker::Shared;

/// The system prompt when none is configured: it says what the model can do here.
fn default_prompt(workspace: &std::path::Path, tools: &Toolbox, timezone: Option<&str>) -> String {
    let mut prompt = tool_prompt(workspace, tools);
    // User turns reach the model stamped in UTC (context::stamped).
    // TZ may be a file (`:/etc/localtime`), which says nothing to a model.
    let named = |tz: &str| !tz.is_empty() && !tz.starts_with([':', '/']);
    let zone = match timezone.map(str::to_string).or_else(|| std::env::var("TZ").ok()) {
        Some(tz) if named(tz.trim()) => format!("the user's time zone is {}", tz.trim()),
        _ => "ask the user for their time zone when it matters".to_string(),
    };
    prompt.push_str(&format!(
        " Each user message begins with the time it was sent, in UTC ([Wed 2026-12-02 19:20 UTC]); {zone}."
    ));
    prompt
}

/// What the default prompt says of the workspace and the tools.
fn tool_prompt(workspace: &std::path::Path, tools: &Toolbox) -> String {
    let base = "You are a helpful assistant.";
    if !tools.any() {
        return base.into();
    }
    let names = tools.builtin_names();
    let mut can = Vec::new();
    if names.contains(&"bash") {
        can.push("run shell commands");
    }
    if names
        .iter()
        .any(|n| n.ends_with("_file") || *n == "glob" || *n == "grep" || *n == "list_files")
    {
        can.push("read, write and search files");
    }
    if names.contains(&"web_search") {
        can.push("search the web");
    }
    if names.contains(&"web_fetch") {
        can.push("fetch web pages");
    }
    let what = if can.is_empty() {
        "use the tools you are given".to_string()
    } else {
        format!("{} with your tools", can.join(", "))
    };
    let mut prompt = format!(
        "{base} You work in the folder {} (your workspace): you can {what}. Use a tool when it helps \
         answer; answer directly when it does not. Files you create stay in the workspace.",
        workspace.display()
    );
    if names.contains(&"send_file") {
        prompt.push_str(
            " Files and photos the user sends you are saved under inbox/ in the workspace; send_file sends \
             one of yours to them.",
        );
    }
    if names.contains(&"memory_store") {
        prompt.push_str(
            " You have a long-term memory: use memory_store when the user asks you to remember \
             something or you learn a lasting fact about them or the work; never store secrets, \
             passwords or keys, nor passing details. Delete memories that turn out wrong. \
             Memories relevant to a message come after it under [Memories].",
        );
    }
    if names.contains(&"cron_create") {
        prompt.push_str(
            " For reminders and recurring jobs, schedule a task with cron_create; its runs come to \
             you as messages from \"Scheduled Task\" and your answer reaches the chat that asked.",
        );
    }
    prompt
}

/// The model's commands and the MCP servers run as the agent's user, without its keys in
/// their environment; but the kernel shows any process of that user the environment this
/// one started with (`/proc/PID/environ`, the keys among it) and its memory. A process
/// that is not dumpable shows them only to one that may trace any process (root outside
/// a user namespace, `CAP_SYS_PTRACE`), which the sandbox's processes are not. It also
/// means no core dump, which would hold the keys too. Children get their own flag back
/// when they exec.
fn keep_keys_from_children() {
    // SAFETY: prctl on this process only, with no pointers.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        log::warn!(
            "cannot keep the keys from the model's commands (prctl PR_SET_DUMPABLE: {})",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> ExitCode {
    // Logging first: reading agent.json already reports problems.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    keep_keys_from_children();
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
    log::info!("aegis-agent starting");
    if let Err(e) = tether::trust::install_from_env() {
        eprintln!("aegis-agent: {e}");
        return ExitCode::from(2);
    }
    match &config.provider {
        Some(p) if p.host.is_some() => {
            log::info!(
                "LLM provider: {} (model {}, through the host)",
                p.base_url,
                p.model
            )
        }
        Some(p) => log::info!("LLM provider: {} (model {}, {})", p.kind, p.model, p.base_url),
        None => {
            log::warn!("LLM provider: none (set ANTHROPIC_API_KEY, OPENAI_API_KEY or OPENROUTER_API_KEY)")
        }
    }

    let workspace = match Workspace::new(&config.workspace) {
        Ok(w) => w,
        Err(e) => {
            log::error!("cannot use workspace {}: {e}", config.workspace.display());
            return ExitCode::FAILURE;
        }
    };
    let mcp = Arc::new(McpServers::new(
        config.mcp.clone(),
        workspace.root(),
        &config.tools.hidden_env,
    ));
    let memory = Arc::new(MemoryStore::new(&config.workspace, config.memory.clone()));
    let (notice_tx, notice_rx) = unbounded();
    let link = TetherLink::new(notice_tx);
    let uplink = match &config.mode {
        Mode::Harness { harness, .. } => Uplink::Harness(harness.clone()),
        Mode::Direct(_) => Uplink::Tether(link.clone()),
    };
    // What every model request costs, image and transcription models' too.
    let ledger = Arc::new(usage::Ledger::open(&config.workspace));
    let mut tools = Toolbox::new(
        workspace,
        &config.tools,
        Arc::clone(&mcp),
        Arc::clone(&memory),
        uplink.clone(),
        &ledger,
    );
    let builtins = tools.builtin_names();
    log::info!(
        "tools: {}{}",
        if builtins.is_empty() {
            "none built in".to_string()
        } else {
            builtins.join(", ")
        },
        if mcp.is_empty() {
            String::new()
        } else {
            format!("; MCP servers: {}", mcp.names().join(", "))
        }
    );
    // Frames of `host:` models come back on the listener or the tether; only such an
    // agent builds the link.
    let routes = Routes::default();
    let host = config
        .provider
        .as_ref()
        .and_then(|p| p.host.as_ref())
        .map(|_| HostLink::new(uplink.clone(), routes.clone()));
    let restarter = restart::Restarter::new(uplink.clone(), &config.workspace);
    let keepalive = Keepalive::start(uplink);
    let (own_tx, own_rx) = unbounded();
    tools.run_jobs(config.tools.background_timeout, own_tx, keepalive.clone());
    // Behind AegisVM's harness, the harness runs them when it boots the VM.
    if let Mode::Direct(_) = config.mode {
        tools.run_startup();
    }

    let (ingress_tx, ingress_rx) = unbounded();
    let (egress_tx, egress_rx) = unbounded();
    let system_prompt = config
        .system_prompt
        .clone()
        .unwrap_or_else(|| default_prompt(&config.workspace, &tools, config.tools.timezone.as_deref()));
    let shared = Arc::new(Shared {
        models: config.provider.clone().map(|p| {
            let llm = Llm::new(p, host).with_ledger(Arc::clone(&ledger));
            let others = config
                .other_providers
                .iter()
                .map(|o| Llm::new(o.clone(), None).with_ledger(Arc::clone(&ledger)))
                .collect();
            chat_model::Models::new(llm, &config.workspace, config.chat_models.clone(), others)
        }),
        limits: Arc::new(limits::Limits::new(
            config.limits,
            Arc::clone(&ledger),
            &config.workspace,
        )),
        usage: Arc::clone(&ledger),
        sessions: SessionStore::new(&config.workspace),
        system_prompt,
        budget: config.budget,
        recaps: Arc::new(recap::Recaps::new(config.recap)),
        egress: egress_tx,
        tools,
        max_rounds: config.max_rounds,
        keepalive,
        workspace: config.workspace.clone(),
        memory,
        restarter,
        voice: transcribe::Voice::from_config(&config.voice).with_ledger(Arc::clone(&ledger)),
    });
    restart::announce(&config.workspace, &shared.sessions, &shared.egress);
    shared.tools.recover_jobs();
    let router = match thread::Builder::new()
        .name("router".into())
        .spawn(move || router::run(ingress_rx, own_rx, shared))
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
            mcp.start_all();
            let harness = harness.clone();
            let spawned = thread::Builder::new()
                .name("egress".into())
                .spawn(move || egress::run(egress_rx, &harness));
            if let Err(e) = spawned {
                log::error!("cannot start the egress thread: {e}");
                return ExitCode::FAILURE;
            }
            harness::serve(server, ingress_tx, &routes);
        }
        Mode::Direct(addr) => {
            log::info!("agent dialing tether at {addr}");
            mcp.start_all();
            direct::run(addr, egress_rx, notice_rx, ingress_tx, &routes, &link.calls);
        }
    }
    let _ = router.join();
    ExitCode::SUCCESS
}
