//! `aegis-gateway`: turns a Telegram bot into the front door of an agent instance
//! (PROTOCOL.md §7). Works against the real aegisd and against `aegis-kit serve`.

mod annotate;
mod bot;
mod chat_queues;
mod config;
mod cron;
mod documents;
mod exec;
mod exec_record;
mod gone;
mod images;
mod inbox;
mod ingress;
mod journal;
mod lifecycle;
mod markdown;
mod menu;
mod poller;
mod rate;
mod render;
mod sender;
mod state;
mod telegram;
mod upload;
mod voice;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use lexopt::prelude::*;
use tether::AegisClient;

use config::{BotConfig, TokenSource};
use telegram::{redact, Telegram};

const HELP: &str = "\
aegis-gateway: a Telegram bot in front of an Aegis agent instance.

USAGE:
    aegis-gateway [OPTIONS]

OPTIONS:
    --config PATH   gateway config [env AEGIS_GATEWAY_CONFIG, default ~/.aegis/gateway.json]
    --socket PATH   aegisd API socket [env AEGIS_SOCKET, default ~/.aegis/aegisd.sock]
    --check         validate the config, the token (getMe) and the instance, say how
                    many messages a stopped run left to hand on and how many people
                    rate_limit holds back now, then exit
    -v, --verbose   debug logging (same as RUST_LOG=debug)
    -h, --help      this help
    -V, --version   the version

CONFIG (~/.aegis/gateway.json):
    {\"telegram\": {\"bot_token_secret\": \"TELEGRAM_BOT_TOKEN\", \"instance\": \"my-agent\",
                  \"allowed_chats\": [\"*\"]}}
    bot_token        inline token instead of a secret (not recommended)
    allowed_chats    chat ids, or \"*\" for all; absent or empty: no chat is answered
    api_url          Bot API base [default https://api.telegram.org]
    stream_mode      auto (drafts in private chats when available), draft, or edit
    rich_messages    auto (a reply part with a table goes as a rich message, which
                     Telegram renders from its Markdown; Bot API 10.1), always, or off
    group_mode       mention (answer only when addressed in groups) or all
    edited_messages  answer (an edited message is passed on again, stopping the reply
                     to its old words if it is the chat's last) or ignore
    exec_users       Telegram user ids who may send /exec (commands run in the instance
                     with sh -c, without the model; /exit to return); default nobody
    rate_limit       {\"messages\": 20, \"minutes\": 60}, or a list of such rules: how many
                     messages each person may send the agent, counted on the host
                     before the instance wakes; past it a message is not passed on
                     (the sender told once); default none
    rate_limit_exempt  Telegram user ids no rate_limit holds back
    \"telegram\" may also be a list of such objects, one per bot.

ENVIRONMENT (override the single-bot config):
    TELEGRAM_BOT_TOKEN, TELEGRAM_BOT_TOKEN_SECRET, AEGIS_GATEWAY_INSTANCE, TELEGRAM_API_URL

NETWORK (as for Go programs, curl and OpenSSL):
    SSL_CERT_FILE, SSL_CERT_DIR  trust the PEM certificates of this file / these folders
                    (`:`-separated) instead of the bundled Mozilla roots
    HTTPS_PROXY (HTTP_PROXY for an http:// api_url), else ALL_PROXY; NO_PROXY
                    proxy for the Bot API: http://HOST:PORT (CONNECT) or
                    socks5h://, socks5://, socks4a://, socks4:// (user:pass@ in
                    any); localhost and loopback addresses never use it

PER-INSTANCE MODE (current AegisVM starts one gateway per instance):
    AEGIS_INSTANCE=HANDLE   serve only this instance; config ~/.aegis/kits/HANDLE/gateway.json;
                            the token comes from the variable telegram.bot_token_env names
                            [default TELEGRAM_BOT_TOKEN]; exits 0 once the instance is
                            deleted or aegisd is gone; fires the instance's scheduled tasks
                            (workspace/.aegis/cron.json) unless AEGIS_HOST_SCHEDULES is set

A changed config file (seen within 5 s) or SIGHUP reloads the gateway without losing or
repeating a message. Chats are handled side by side (up to 8 per bot), each in order; what
was read from Telegram stays in ~/.aegis/gateway/BOT/poll.json until handed on, so a crash
loses nothing (a message four runs died on is given up by the fifth, and its chat told).

CHAT COMMANDS:
    /stop, /cancel   cancel the reply in progress
    /new             start a fresh conversation
    /usage           the tokens the model used today, this week, this month (answered
                     by the agent from its record)
    /skills          the agent's skills and its MCP servers' prompts (answered by the agent)
    /mcp             the agent's MCP servers: which run, their tools, sign-ins;
                     /mcp sign_out NAME signs out of one (answered by the agent)
    /model           the model this chat talks to; /model NAME picks another the
                     provider lists, /model default the agent's again (answered by
                     the agent)
    /tasks           this chat's scheduled tasks; /tasks run|delete|pause|resume ID
                     (answered by the agent)
    /jobs            the background jobs that run for this chat; /jobs stop ID
                     (answered by the agent)
    /memory          what the agent remembers in this chat; /memory forget ID
                     (answered by the agent)
    /exec, /exit     shell commands in the instance, for the users exec_users names

In a chat with topics (a forum group, or a private chat with topics on) each topic is a
conversation of its own. An album of photos reaches the agent as one message, a text file
(32 KB at most) inside the message, any other file (20 MB at most) saved into the
instance's workspace as inbox/NAME, a voice or video message, an audio file or a video
as a recording the agent has written down (over 700 KB through inbox/), a reply with
what it answers quoted, a forward with whom it is from, a location as its coordinates, a
sticker as its emoji. Images, files and voice messages a reply attaches follow its text as
photos, documents and voice messages.";

struct Args {
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    check: bool,
    verbose: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        config: None,
        socket: std::env::var_os("AEGIS_SOCKET")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        check: false,
        verbose: false,
    };
    let mut p = lexopt::Parser::from_env();
    let bad = |e: lexopt::Error| format!("{e} (see --help)");
    while let Some(arg) = p.next().map_err(bad)? {
        match arg {
            Long("config") => a.config = Some(PathBuf::from(p.value().map_err(bad)?)),
            Long("socket") => a.socket = Some(PathBuf::from(p.value().map_err(bad)?)),
            Long("check") => a.check = true,
            Short('v') | Long("verbose") => a.verbose = true,
            Short('h') | Long("help") => {
                println!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("aegis-gateway {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(bad(other.unexpected())),
        }
    }
    Ok(Some(a))
}

/// The token of `bot`, fetching a secret from aegisd (waiting for aegisd to come up when
/// `wait` is set, as after a reboot where the gateway starts first).
fn resolve_token(bot: &BotConfig, aegis: &AegisClient, wait: bool) -> Result<String, String> {
    match &bot.token {
        TokenSource::Inline(t) => Ok(t.clone()),
        TokenSource::Env(_, t) => Ok(t.clone()),
        TokenSource::Secret(name) => {
            let mut backoff = Duration::from_secs(1);
            loop {
                match aegis.get_secret(name) {
                    Ok(t) => return Ok(t.trim().to_string()),
                    Err(e) if wait && e.is_transient() => {
                        log::warn!("cannot read secret {name} yet ({e}); retrying in {backoff:?}");
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    Err(e) => return Err(format!("bot token secret {name:?}: {e}")),
                }
            }
        }
    }
}

fn check(bots: &[BotConfig], aegis: &AegisClient, path: &std::path::Path) -> Result<(), String> {
    println!(
        "config: {} ({} bot{})",
        path.display(),
        bots.len(),
        if bots.len() == 1 { "" } else { "s" }
    );
    for bot in bots {
        let token = resolve_token(bot, aegis, false)?;
        let tg = Telegram::new(&bot.api_url, &token);
        let names = tg
            .get_me()
            .map_err(|e| format!("token rejected by getMe: {}", redact(&e.to_string(), &token)))?;
        let (name, others) = names
            .split_first()
            .map_or(("?", &[][..]), |(n, o)| (n.as_str(), o));
        let also: String = others.iter().map(|o| format!(", also @{o}")).collect();
        println!("bot: @{name}{also} (token from {:?})", bot.token);
        let instance = aegis
            .request(
                "GET",
                &format!("/v1/instances/{}", tether::client::encode_segment(&bot.instance)),
                None,
            )
            .map_err(|e| format!("instance {:?}: {e}", bot.instance))?;
        println!("instance: {} reachable", bot.instance);
        // Files go through the workspace both ways.
        match instance["workspace"].as_str().filter(|w| !w.is_empty()) {
            Some(ws) => {
                let max = bot.inbox_max / (1024 * 1024);
                let holds = match crate::inbox::holds(std::path::Path::new(ws)) {
                    Ok(b) => format!("{} MB of its {max} MB", crate::inbox::megabytes(b)),
                    Err(e) => e.to_string(),
                };
                println!("workspace: {ws} (files sent to the bot are saved in inbox/: {holds})")
            }
            None => println!(
                "workspace: not reported by aegisd (files sent to the bot other than text and images, \
                 recordings over 700 KB and files the agent sends cannot pass)"
            ),
        }
        match &bot.allowed_chats {
            None => println!("allowed_chats: every chat"),
            Some(ids) if ids.is_empty() => println!("allowed_chats: none (no chat will be answered)"),
            Some(ids) => println!("allowed_chats: {ids:?}"),
        }
        // What a run that died left to hand on (the next run does it first).
        let poll = crate::state::dir(tg.bot_id()).join("poll.json");
        let st: crate::state::PollState = crate::state::load(&poll);
        match bot.rate.any() {
            false => println!("rate_limit: {}", bot.rate.describe()),
            true => println!(
                "rate_limit: {}; {} held back now",
                bot.rate.describe(),
                bot.rate.held(&st.rates, crate::rate::now())
            ),
        }
        match st.pending.len() {
            0 => println!("state: {} (nothing waiting)", poll.display()),
            n => println!(
                "state: {} ({n} message{} read from Telegram and not yet handed on)",
                poll.display(),
                if n == 1 { "" } else { "s" }
            ),
        }
    }
    println!("ok");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aegis-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let level = if args.verbose { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let path = config::path(args.config);
    let bots = match config::load(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("aegis-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = tether::trust::install_from_env() {
        eprintln!("aegis-gateway: {e}");
        return ExitCode::from(2);
    }
    let aegis = AegisClient::new(args.socket.unwrap_or_else(tether::client::default_socket));
    if args.check {
        return match check(&bots, &aegis, &path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("aegis-gateway: check failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let events = match lifecycle::start(path.clone(), config::per_instance(), aegis.clone()) {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("aegis-gateway: cannot start the watcher: {e}");
            return ExitCode::FAILURE;
        }
    };
    for bot in bots {
        let token = match resolve_token(&bot, &aegis, true) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("aegis-gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        let tg = Telegram::new(&bot.api_url, &token);
        if bot.allowed_chats.as_ref().is_some_and(|c| c.is_empty()) {
            log::warn!(
                "bot {}: allowed_chats is empty, so no chat will be answered; add chat ids or \"*\"",
                tg.bot_id()
            );
        }
        log::info!("bot {} → instance {}", tg.bot_id(), bot.instance);
        if bot.rate.any() {
            log::info!("bot {}: rate_limit {}", tg.bot_id(), bot.rate.describe());
        }
        if let Err(e) = bot::start(bot, tg, aegis.clone()) {
            eprintln!("aegis-gateway: cannot start threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(instance) = config::per_instance() {
        if std::env::var_os("AEGIS_HOST_SCHEDULES").is_some() {
            log::info!("scheduled tasks: fired by the host");
        } else {
            let clock = match tether::schedule::Clock::from_env() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("aegis-gateway: {e}");
                    return ExitCode::from(2);
                }
            };
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            if let Err(e) = cron::start(aegis.clone(), instance, dir, clock) {
                eprintln!("aegis-gateway: cannot start the scheduler: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    log::info!("aegis-gateway running");
    // State is saved as it changes, so stopping is just leaving, and a reload is a
    // fresh start of this same program.
    for ev in events {
        match ev {
            lifecycle::Event::Stop(sig) => {
                log::info!("signal {sig}: stopping");
                return ExitCode::SUCCESS;
            }
            lifecycle::Event::Gone(why) => {
                log::info!("{why}: exiting");
                return ExitCode::SUCCESS;
            }
            lifecycle::Event::Reload(why) => match config::load(&path) {
                Ok(_) => {
                    log::info!("{why}: reloading {}", path.display());
                    return reexec();
                }
                Err(e) => {
                    log::error!("{why}, but the new config is not valid ({e}); keeping the running one")
                }
            },
        }
    }
    ExitCode::SUCCESS
}

/// Replace this process with a fresh run of the same program, arguments and environment.
fn reexec() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("aegis-gateway"));
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("aegis-gateway: cannot restart {}: {err}", exe.display());
    ExitCode::FAILURE
}
