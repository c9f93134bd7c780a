//! The client commands: `instance`, `logs`, `secret`. Each is one or two API calls
//! against aegisd or `aegis-kit serve` through `tether::AegisClient`.

use std::io::{BufRead, Write};

use serde_json::{json, Value};
use tether::AegisClient;

use crate::CliError;

/// Options of `instance start`.
#[derive(Debug, Default)]
pub struct StartOpts {
    /// Instance name.
    pub name: Option<String>,
    /// Kit preset.
    pub kit: Option<String>,
    /// Secrets passed as env vars.
    pub secrets: Vec<String>,
    /// `K=V` pairs.
    pub env: Vec<(String, String)>,
    /// OCI image (recorded).
    pub image: Option<String>,
    /// Command after `--`.
    pub command: Vec<String>,
    /// Sandbox settings (`--sandbox`, `--net`, `--memory`, `--max-procs`).
    pub sandbox: serde_json::Map<String, Value>,
    /// `--workspace`: a name, or a folder (made absolute here, against our working folder
    /// rather than the host's).
    pub workspace: Option<String>,
}

/// `instance start`: create the instance if it does not exist, then boot it.
pub fn instance_start(c: &AegisClient, o: &StartOpts) -> Result<(), CliError> {
    let name = o
        .name
        .as_deref()
        .ok_or_else(|| CliError::Usage("instance start needs --name NAME".into()))?;
    let exists = match c.request("GET", &format!("/v1/instances/{}", enc(name)), None) {
        Ok(_) => true,
        Err(e) if e.status() == Some(404) => false,
        Err(e) => return Err(e.into()),
    };
    if !exists {
        let preset = match &o.kit {
            Some(k) => Some(crate::manifest::load_installed(k)?),
            None => None,
        };
        let command = if o.command.is_empty() {
            preset
                .as_ref()
                .map(|m| m.defaults.command.clone())
                .unwrap_or_default()
        } else {
            o.command.clone()
        };
        let image = o
            .image
            .clone()
            .or(preset.as_ref().and_then(|m| m.image.base.clone()));
        let env: serde_json::Map<String, Value> = o.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let workspace = match o.workspace.as_deref() {
            Some(w) if w.contains('/') || w.starts_with('.') => Some(
                std::path::absolute(w)
                    .map_err(|e| CliError::Usage(format!("--workspace {w}: {e}")))?
                    .display()
                    .to_string(),
            ),
            other => other.map(str::to_string),
        };
        let body = json!({
            "name": name, "kit": o.kit, "image": image, "command": command,
            "secrets": o.secrets, "env": env, "sandbox": o.sandbox, "workspace": workspace,
        });
        let created = c.request("POST", "/v1/instances", Some(&body))?;
        if workspace.is_some() {
            println!(
                "instance {name} created, working in {}",
                created["workspace"].as_str().unwrap_or("?")
            );
        } else if created["workspace_reused"] == json!(true) {
            println!(
                "instance {name} created, with the workspace an earlier {name} left ({}): \
                 its conversations, memories, tasks and files",
                created["workspace"].as_str().unwrap_or("?")
            );
        } else {
            println!("instance {name} created");
        }
    } else if !o.secrets.is_empty()
        || !o.env.is_empty()
        || !o.command.is_empty()
        || !o.sandbox.is_empty()
        || o.workspace.is_some()
    {
        eprintln!(
            "note: instance {name} already exists; --secret/--env/--sandbox/--net/--workspace/command \
             apply only when it is created"
        );
    }
    let info = c.request("POST", &format!("/v1/instances/{}/start", enc(name)), None)?;
    println!("instance {name}: {}", info["state"].as_str().unwrap_or("?"));
    if let Some(s) = info["sandbox_in_force"].as_str() {
        println!("sandbox: {s}");
    }
    Ok(())
}

fn enc(s: &str) -> String {
    tether::client::encode_segment(s)
}

/// `instance list`.
pub fn instance_list(c: &AegisClient) -> Result<(), CliError> {
    let v = c.request("GET", "/v1/instances", None)?;
    println!(
        "{:<20} {:<10} {:<8} {:<8} COMMAND",
        "NAME", "STATE", "PID", "IDLE"
    );
    for i in v["instances"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<10} {:<8} {:<8} {}",
            i["name"].as_str().unwrap_or("?"),
            i["state"].as_str().unwrap_or("?"),
            i["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
            format!("{}s", i["idle_secs"].as_u64().unwrap_or(0)),
            i["command"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        );
    }
    // serve's only: aegisd's list has neither.
    let kept = v["kept_workspaces"].as_array().filter(|k| !k.is_empty());
    if let Some(kept) = kept {
        println!(
            "\nworkspaces removed instances left (a new instance of that name takes its \
             up; `instance rm NAME --purge` deletes one):"
        );
        for k in kept {
            println!(
                "  {:<20} {}",
                k["name"].as_str().unwrap_or("?"),
                k["path"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(named) = v["named_workspaces"].as_array().filter(|n| !n.is_empty()) {
        println!("\nnamed workspaces (--workspace NAME; `workspace rm NAME` deletes one not in use):");
        for n in named {
            let user = n["used_by"]
                .as_str()
                .map_or("not in use".to_string(), |u| format!("used by {u}"));
            println!(
                "  {:<20} {} ({user})",
                n["name"].as_str().unwrap_or("?"),
                n["path"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// `instance info NAME`: the full record as JSON.
pub fn instance_info(c: &AegisClient, name: &str) -> Result<(), CliError> {
    let v = c.request("GET", &format!("/v1/instances/{}", enc(name)), None)?;
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    Ok(())
}

/// `instance stop|pause NAME`.
pub fn instance_action(c: &AegisClient, name: &str, action: &str) -> Result<(), CliError> {
    let v = c.request("POST", &format!("/v1/instances/{}/{action}", enc(name)), None)?;
    println!("instance {name}: {}", v["state"].as_str().unwrap_or("?"));
    Ok(())
}

/// `instance rm NAME [--purge]`: the workspace stays unless purged (serve's answer says
/// which, and where; aegisd's says nothing of it).
pub fn instance_rm(c: &AegisClient, name: &str, purge: bool) -> Result<(), CliError> {
    let query = if purge { "?purge=1" } else { "" };
    let done = c.request("DELETE", &format!("/v1/instances/{}{query}", enc(name)), None)?;
    let workspace = done["workspace"].as_str().unwrap_or("its workspace folder");
    match (done["workspace_kept"].as_bool(), done["deleted"].is_null()) {
        (Some(false), true) => println!("the workspace instance {name} left is deleted ({workspace})"),
        (Some(false), false) => println!("instance {name} deleted, with its workspace"),
        (Some(true), _) if done["workspace_chosen"] == json!(true) => println!(
            "instance {name} deleted; its workspace {workspace} was chosen with --workspace \
             and stays (serve never deletes one)"
        ),
        (Some(true), _) => println!(
            "instance {name} deleted; its workspace is kept at {workspace} (conversations, \
             memories, scheduled tasks, files): a new instance named {name} takes it up, \
             `aegis-kit instance rm {name} --purge` deletes it"
        ),
        (None, _) if purge => println!(
            "instance {name} deleted; the host did not say what became of its workspace \
             (aegisd deletes the one it made and keeps one chosen with --workspace)"
        ),
        (None, _) => println!("instance {name} deleted"),
    }
    Ok(())
}

/// `workspace rm NAME`: a named workspace no instance uses, deleted by serve.
pub fn workspace_rm(c: &AegisClient, name: &str) -> Result<(), CliError> {
    let done = c.request("DELETE", &format!("/v1/workspaces/{}", enc(name)), None)?;
    let path = done["path"].as_str().unwrap_or("its folder");
    println!("workspace {name} deleted ({path})");
    Ok(())
}

/// `instance exec NAME -- CMD...`: the command's output as it comes (its stderr lines on
/// stderr), then its exit status as ours.
pub fn instance_exec(c: &AegisClient, name: &str, command: &[String]) -> Result<(), CliError> {
    use tether::client::{ExecEvent, ExecStream};
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    // As long as serve lets a command run, and a little more.
    let limit = crate::serve::exec::RUN_LIMIT + std::time::Duration::from_secs(30);
    for event in ExecStream::from_reader(c.exec(name, &argv, limit)?) {
        match event.map_err(|e| CliError::Other(format!("reading the command's output: {e}")))? {
            ExecEvent::Line { stderr: true, text } => eprintln!("{text}"),
            ExecEvent::Line { text, .. } => println!("{text}"),
            ExecEvent::Done(0) => return Ok(()),
            ExecEvent::Done(code) => return Err(CliError::Exit(u8::try_from(code).unwrap_or(1).max(1))),
        }
    }
    Err(CliError::Other(
        "the command's output ended without an exit status".into(),
    ))
}

/// `logs NAME [-f] [--tail N]`.
pub fn logs(c: &AegisClient, name: &str, follow: bool, tail: Option<usize>) -> Result<(), CliError> {
    if !follow {
        let mut path = format!("/v1/instances/{}/logs", enc(name));
        if let Some(t) = tail {
            path.push_str(&format!("?tail={t}"));
        }
        let v = c.request("GET", &path, None)?;
        let out = std::io::stdout();
        let mut out = out.lock();
        for l in v["lines"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "{}", l.as_str().unwrap_or(""));
        }
        return Ok(());
    }
    let mut r = c.get_reader(&format!("/v1/instances/{}/logs?follow=1", enc(name)))?;
    let mut out = std::io::stdout();
    std::io::copy(&mut r, &mut out).map_err(|e| CliError::Other(format!("log stream ended: {e}")))?;
    Ok(())
}

/// `secret set NAME [VALUE]`; the value is read from stdin when omitted, so it stays out
/// of shell history and process listings.
pub fn secret_set(c: &AegisClient, name: &str, value: Option<String>) -> Result<(), CliError> {
    let value = match value {
        Some(v) => v,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::Other(format!("cannot read the value from stdin: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if value.is_empty() {
        return Err(CliError::Usage(format!("secret {name}: empty value")));
    }
    c.put_secret(name, &value)?;
    println!("secret {name} set");
    Ok(())
}

/// `secret ls`.
pub fn secret_ls(c: &AegisClient) -> Result<(), CliError> {
    let v = c.request("GET", "/v1/secrets", None)?;
    for n in v["secrets"].as_array().into_iter().flatten() {
        println!("{}", n.as_str().unwrap_or(""));
    }
    Ok(())
}

/// `secret rm NAME`.
pub fn secret_rm(c: &AegisClient, name: &str) -> Result<(), CliError> {
    c.delete_secret(name)?;
    println!("secret {name} removed");
    Ok(())
}
