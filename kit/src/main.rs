//! `aegis-kit`: the Agent Kit's command line. It installs and lists the kit, runs the
//! standalone tether host (`serve`), manages instances and secrets through the aegisd
//! API (real aegisd or `serve`), and chats with an instance from the terminal.

mod chat;
mod cli;
mod daemon;
mod kitcmd;
mod manifest;
mod quickstart;
mod sandbox;
mod serve;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lexopt::prelude::*;
use tether::{AegisClient, ClientError};

const HELP: &str = "\
aegis-kit: the Aegis Agent Kit command line.

USAGE:
    aegis-kit [--socket PATH] COMMAND [ARGS]

COMMANDS:
    quickstart                      start serve if needed, create my-agent if absent, chat
    install [--prefix DIR]          install the kit binaries into DIR/bin [default ~/.local]
                                    and the manifest into ~/.aegis/kits/agent.json
    uninstall [--prefix DIR]        remove them again
    list                            installed kits: NAME VERSION STATUS DESCRIPTION
    up [--no-daemons]               start serve (unless aegisd runs) and the kit daemons
    down                            stop the kit daemons and serve
    serve [OPTIONS]                 run the standalone tether host (no AegisVM needed)
        --pause-after SECS          pause an idle instance (SIGSTOP) [default 60, 0 = never]
        --stop-after SECS           then stop it after this much more idle time [default 300]
        --boot-timeout SECS         how long a wake may take [default 30]
        --agent PATH                aegis-agent binary [default: beside aegis-kit, else PATH]
        --sandbox auto|strict|none  how instances are isolated [default auto: every layer
                                    the kernel offers; strict: refuse without all of them]
        --host-llm NAME=URL         a model server on this machine that agents reach as
                                    model host:NAME/MODEL, through serve (no network needed
                                    in the instance); adds or replaces the defaults
                                    ollama=http://localhost:11434/v1,
                                    lmstudio=http://localhost:1234/v1,
                                    vllm=http://localhost:8000/v1 [repeatable]
    instance start --name NAME [--kit KIT] [--secret NAME]... [--env K=V]... [--image IMG]
                   [--sandbox auto|strict|none] [--net host|none|PORT,...] [--memory MiB]
                   [--max-procs N] [--workspace NAME|PATH] [-- CMD...]
                                    --workspace: a named workspace of serve's, or a folder
                                    of yours (a project) for the instance to work in;
                                    never deleted by rm
    instance start NAME             boot an existing instance
    instance list | info NAME | stop NAME | pause NAME
    instance rm NAME [--purge]      delete an instance; its workspace (conversations,
                                    memories, tasks, files) is kept for a new instance of
                                    that name unless --purge
    instance exec NAME -- CMD...    run a command in the instance's sandbox and workspace
                                    (its output streams; exits with its status)
    workspace rm NAME               delete a named workspace (--workspace NAME) that no
                                    instance uses; `instance list` names them
    logs NAME [-f] [--tail N]       an instance's output
    secret set NAME [VALUE]         store a secret (VALUE from stdin when omitted)
    secret ls | rm NAME
    chat NAME [-m TEXT] [--session ID]   chat in the terminal; -m sends one message and exits;
                                    /new starts a fresh conversation (kept as the
                                    current one), /usage shows what the model used,
                                    /model shows or picks the session's model
                                    [default session: the current one]

OPTIONS:
    --socket PATH     aegisd API socket [default ~/.aegis/aegisd.sock; env AEGIS_SOCKET]
    -h, --help        this help
    -V, --version      the version

ENVIRONMENT:
    AEGIS_HOME        state folder [default ~/.aegis]
    AEGIS_KIT_CRON    off: serve leaves scheduled tasks to per-instance gateways
                      [default: serve fires every instance's workspace/.aegis/cron.json]
    RUST_LOG          log level (serve logs to stderr)";

/// A failed command, printed as `aegis-kit: MESSAGE`.
#[derive(Debug)]
pub enum CliError {
    /// Wrong arguments: exit code 2.
    Usage(String),
    /// The API call failed.
    Api(ClientError),
    /// Anything else.
    Other(String),
    /// A command run in an instance ended with this status (it said why itself).
    Exit(u8),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m} (see aegis-kit --help)"),
            CliError::Api(ClientError::Transport { socket, .. }) => write!(
                f,
                "cannot reach aegisd at {}: is `aegis-kit serve` (or aegisd) running?",
                socket.display()
            ),
            CliError::Api(e) => write!(f, "{e}"),
            CliError::Other(m) => f.write_str(m),
            CliError::Exit(code) => write!(f, "the command exited with status {code}"),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        CliError::Api(e)
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> CliError {
        CliError::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Internal entry points serve starts this binary with (not in --help).
    match args.first().and_then(|a| a.to_str()) {
        Some("__sandbox") => return sandbox::launch::main(args.into_iter().skip(1).collect()),
        Some("__sandbox-probe") => return sandbox::probe_main(),
        _ => {}
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("aegis-kit: {e}");
            ExitCode::from(if matches!(e, CliError::Usage(_)) { 2 } else { 1 })
        }
    }
}

fn string(v: OsString) -> Result<String, CliError> {
    v.into_string()
        .map_err(|v| CliError::Usage(format!("not UTF-8: {v:?}")))
}

fn secs(v: OsString, flag: &str) -> Result<Duration, CliError> {
    let s = string(v)?;
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| CliError::Usage(format!("{flag} takes whole seconds, got {s:?}")))
}

fn run(mut args: Vec<OsString>) -> Result<(), CliError> {
    // `instance start ... -- CMD ARGS`: everything after `--` is the instance's command.
    let tail = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let t: Vec<OsString> = args.split_off(i + 1);
            args.pop();
            t.into_iter().map(string).collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };
    let mut p = lexopt::Parser::from_args(args);
    let mut socket: Option<PathBuf> = std::env::var_os("AEGIS_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let command = loop {
        match p.next()? {
            Some(Long("socket")) => socket = Some(PathBuf::from(p.value()?)),
            Some(Short('h') | Long("help")) => {
                println!("{HELP}");
                return Ok(());
            }
            Some(Short('V') | Long("version")) => {
                println!("aegis-kit {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            Some(Value(v)) => break string(v)?,
            Some(other) => return Err(other.unexpected().into()),
            None => return Err(CliError::Usage("missing command".into())),
        }
    };
    let socket = socket.unwrap_or_else(tether::client::default_socket);
    let client = || AegisClient::new(&socket);
    if !tail.is_empty() && command != "instance" {
        return Err(CliError::Usage(
            "`--` COMMAND is only for `instance start` and `instance exec`".into(),
        ));
    }
    match command.as_str() {
        "serve" => serve_cmd(&mut p, socket.clone()),
        "instance" => instance_cmd(&mut p, &client(), tail),
        "logs" => {
            let (mut name, mut follow, mut tail) = (None, false, None);
            while let Some(a) = p.next()? {
                match a {
                    Short('f') | Long("follow") => follow = true,
                    Long("tail") => {
                        let t = string(p.value()?)?;
                        tail = Some(
                            t.parse()
                                .map_err(|_| CliError::Usage(format!("--tail takes a number, got {t:?}")))?,
                        );
                    }
                    Value(v) if name.is_none() => name = Some(string(v)?),
                    other => return Err(other.unexpected().into()),
                }
            }
            let name = name.ok_or_else(|| CliError::Usage("logs needs an instance name".into()))?;
            cli::logs(&client(), &name, follow, tail)
        }
        "workspace" => {
            let mut rest = Vec::new();
            while let Some(a) = p.next()? {
                match a {
                    Value(v) => rest.push(string(v)?),
                    other => return Err(other.unexpected().into()),
                }
            }
            match rest.as_slice() {
                [sub, name] if matches!(sub.as_str(), "rm" | "delete") => cli::workspace_rm(&client(), name),
                _ => Err(CliError::Usage(
                    "workspace: expected `rm NAME` (a named workspace; `instance list` names them)".into(),
                )),
            }
        }
        "secret" => {
            let sub = p
                .value()
                .map_err(|_| CliError::Usage("secret needs set, ls or rm".into()))?;
            let mut rest = Vec::new();
            while let Some(a) = p.next()? {
                match a {
                    Value(v) => rest.push(string(v)?),
                    other => return Err(other.unexpected().into()),
                }
            }
            match (string(sub)?.as_str(), rest.as_slice()) {
                ("set", [name]) => cli::secret_set(&client(), name, None),
                ("set", [name, value]) => cli::secret_set(&client(), name, Some(value.clone())),
                ("ls" | "list", []) => cli::secret_ls(&client()),
                ("rm" | "delete", [name]) => cli::secret_rm(&client(), name),
                (s, _) => Err(CliError::Usage(format!(
                    "secret {s}: expected `set NAME [VALUE]`, `ls` or `rm NAME`"
                ))),
            }
        }
        "chat" => {
            let mut o = chat::ChatOpts {
                instance: String::new(),
                message: None,
                session: None,
            };
            while let Some(a) = p.next()? {
                match a {
                    Short('m') | Long("message") => o.message = Some(string(p.value()?)?),
                    Long("session") => o.session = Some(string(p.value()?)?),
                    Value(v) if o.instance.is_empty() => o.instance = string(v)?,
                    other => return Err(other.unexpected().into()),
                }
            }
            if o.instance.is_empty() {
                return Err(CliError::Usage("chat needs an instance name".into()));
            }
            chat::run(&client(), &o)
        }
        "install" | "uninstall" => {
            let mut prefix = None;
            while let Some(a) = p.next()? {
                match a {
                    Long("prefix") => prefix = Some(PathBuf::from(p.value()?)),
                    other => return Err(other.unexpected().into()),
                }
            }
            let prefix = prefix.unwrap_or_else(default_prefix);
            if command == "install" {
                kitcmd::install(&prefix)
            } else {
                kitcmd::uninstall(&prefix)
            }
        }
        "list" => {
            if let Some(a) = p.next()? {
                return Err(a.unexpected().into());
            }
            kitcmd::list()
        }
        "up" => {
            let mut no_daemons = false;
            while let Some(a) = p.next()? {
                match a {
                    Long("no-daemons") => no_daemons = true,
                    other => return Err(other.unexpected().into()),
                }
            }
            kitcmd::up(&socket, no_daemons)
        }
        "down" => {
            if let Some(a) = p.next()? {
                return Err(a.unexpected().into());
            }
            kitcmd::down()
        }
        "quickstart" => {
            if let Some(a) = p.next()? {
                return Err(a.unexpected().into());
            }
            quickstart::run(&socket)
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
}

fn serve_cmd(p: &mut lexopt::Parser, socket: PathBuf) -> Result<(), CliError> {
    let mut timing = serve::supervisor::Timing {
        pause_after: Duration::from_secs(60),
        stop_after: Duration::from_secs(300),
        boot: Duration::from_secs(30),
        queue_limit: 100,
    };
    let mut agent_bin = None;
    let mut level = sandbox::Level::Auto;
    let mut host_llm = Vec::new();
    while let Some(a) = p.next()? {
        match a {
            Long("host-llm") => {
                host_llm.push(serve::host_llm::parse_server(&string(p.value()?)?).map_err(CliError::Usage)?)
            }
            Long("sandbox") => level = string(p.value()?)?.parse().map_err(CliError::Usage)?,
            Long("pause-after") => timing.pause_after = secs(p.value()?, "--pause-after")?,
            Long("stop-after") => timing.stop_after = secs(p.value()?, "--stop-after")?,
            Long("boot-timeout") => timing.boot = secs(p.value()?, "--boot-timeout")?,
            Long("agent") => agent_bin = Some(PathBuf::from(p.value()?)),
            other => return Err(other.unexpected().into()),
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let exe =
        std::env::current_exe().map_err(|e| CliError::Other(format!("cannot find this executable: {e}")))?;
    let probe = sandbox::Probe::run(&exe);
    let missing = probe.missing();
    log::info!(
        "sandbox ({level:?} by default): {}",
        probe.describe(level, &sandbox::Net::Host).to_lowercase()
    );
    if level != sandbox::Level::None && !missing.is_empty() {
        log::warn!(
            "sandbox: this kernel lacks {}; {}",
            missing.join("; "),
            if level == sandbox::Level::Strict {
                "instances that need a strict sandbox will not start"
            } else {
                "instances run with what is available"
            }
        );
    }
    let home = tether::paths::aegis_home();
    let home = home.canonicalize().unwrap_or(home);
    let sock_real = socket.canonicalize().unwrap_or_else(|_| socket.clone());
    let hide_files = if sock_real.starts_with(&home) {
        Vec::new()
    } else {
        vec![sock_real]
    };
    let config = serve::ServeConfig {
        socket,
        state_dir: tether::paths::aegis_home().join("kit"),
        timing,
        agent_bin: agent_bin.unwrap_or_else(|| sibling_binary("aegis-agent")),
        sandbox: std::sync::Arc::new(serve::SandboxSettings {
            level,
            probe,
            exe,
            hide_dirs: vec![home],
            hide_files,
        }),
        host_models: std::sync::Arc::new(serve::host_llm::HostModels::new(&host_llm)),
        chosen: Default::default(),
    };
    log::info!(
        "models on the host (host:NAME/MODEL): {}",
        config.host_models.describe()
    );
    serve::run(config).map_err(|e| CliError::Other(e.to_string()))
}

/// A kit binary: beside this executable or on PATH; else its bare name, so the error
/// when running it names what is missing.
pub fn sibling_binary(name: &str) -> PathBuf {
    daemon::find_binary(name).unwrap_or_else(|| PathBuf::from(name))
}

fn default_prefix() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local"))
        .unwrap_or_else(|| PathBuf::from("/usr/local"))
}

fn instance_cmd(p: &mut lexopt::Parser, c: &AegisClient, command: Vec<String>) -> Result<(), CliError> {
    let sub = string(
        p.value()
            .map_err(|_| CliError::Usage("instance needs start, list, info, stop, pause or rm".into()))?,
    )?;
    if !command.is_empty() && sub != "start" && sub != "exec" {
        return Err(CliError::Usage(
            "`--` COMMAND is only for `instance start` and `instance exec`".into(),
        ));
    }
    let mut o = cli::StartOpts {
        command,
        ..Default::default()
    };
    let mut positional = Vec::new();
    let mut purge = false;
    while let Some(a) = p.next()? {
        match a {
            Long("purge") if matches!(sub.as_str(), "rm" | "delete") => purge = true,
            Long("name") => o.name = Some(string(p.value()?)?),
            Long("kit") => o.kit = Some(string(p.value()?)?),
            Long("secret") => o.secrets.push(string(p.value()?)?),
            Long("image") => o.image = Some(string(p.value()?)?),
            Long("workspace") => o.workspace = Some(string(p.value()?)?),
            Long("sandbox") => {
                let level: sandbox::Level = string(p.value()?)?.parse().map_err(CliError::Usage)?;
                o.sandbox.insert("level".into(), serde_json::json!(level));
            }
            Long("net") => {
                let net: sandbox::Net = string(p.value()?)?.parse().map_err(CliError::Usage)?;
                o.sandbox.insert("net".into(), serde_json::json!(net));
            }
            Long("memory") => {
                let mb = string(p.value()?)?;
                let mb: u64 = mb
                    .parse()
                    .map_err(|_| CliError::Usage(format!("--memory takes MiB, got {mb:?}")))?;
                o.sandbox.insert("memory_mb".into(), serde_json::json!(mb));
            }
            Long("max-procs") => {
                let n = string(p.value()?)?;
                let n: u64 = n
                    .parse()
                    .map_err(|_| CliError::Usage(format!("--max-procs takes a number, got {n:?}")))?;
                o.sandbox.insert("max_procs".into(), serde_json::json!(n));
            }
            Long("env") => {
                let kv = string(p.value()?)?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--env takes K=V, got {kv:?}")))?;
                o.env.push((k.to_string(), v.to_string()));
            }
            Value(v) => positional.push(string(v)?),
            other => return Err(other.unexpected().into()),
        }
    }
    let one = |what: &str| -> Result<String, CliError> {
        match positional.as_slice() {
            [n] => Ok(n.clone()),
            _ => Err(CliError::Usage(format!(
                "instance {what} needs exactly one instance name"
            ))),
        }
    };
    match sub.as_str() {
        "start" => {
            if o.name.is_none() {
                o.name = Some(one("start")?);
            } else if !positional.is_empty() {
                return Err(CliError::Usage(format!(
                    "unexpected argument {:?} (commands go after --)",
                    positional[0]
                )));
            }
            cli::instance_start(c, &o)
        }
        "list" | "ls" => cli::instance_list(c),
        "info" => cli::instance_info(c, &one("info")?),
        "stop" => cli::instance_action(c, &one("stop")?, "stop"),
        "pause" => cli::instance_action(c, &one("pause")?, "pause"),
        "rm" | "delete" => cli::instance_rm(c, &one("rm")?, purge),
        "exec" => {
            if o.command.is_empty() {
                return Err(CliError::Usage(
                    "instance exec needs a command after --: instance exec NAME -- ls -la".into(),
                ));
            }
            cli::instance_exec(c, &one("exec")?, &o.command)
        }
        other => Err(CliError::Usage(format!("unknown instance command {other:?}"))),
    }
}
