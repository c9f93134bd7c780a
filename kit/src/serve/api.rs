//! The HTTP API on the unix socket (PROTOCOL.md §2 plus the instance endpoints the CLI
//! uses). Every error is JSON `{"error": "..."}` with a 4xx/5xx status; no input can
//! panic a handler. Each request runs on a thread of its own, so a long egress stream
//! never holds up other clients.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use serde_json::{json, Value};
use tether::frame::Direction;
use tether::slots::Slots;
use tether::store::StoreError;
use tether::Frame;
use tiny_http::{Header, Method, Request, Response};

use super::registry::{valid_name, InstanceDef};
use super::supervisor::{Cmd, Handle, Info};
use super::{ApiError, Host};

/// Largest request body (a frame or a definition).
pub const MAX_BODY: usize = 1 << 20;
/// A keep-alive newline is written to an idle egress stream this often, which also
/// notices clients that went away.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long an ingress POST may wait for a wake (aegisd allows 30 s).
const WAKE_WAIT: Duration = Duration::from_secs(35);

pub(super) type Reply = Result<(u16, Value), ApiError>;

pub(super) fn e(status: u16, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// Requests (streams included) handled at once; past it a request gets 503 at once, so
/// a flood of connections cannot take unbounded threads and memory.
pub const MAX_ACTIVE: usize = 256;

/// Accept requests until the server is unblocked.
pub fn serve(server: &tiny_http::Server, host: &Arc<Host>) {
    let active = Slots::new(MAX_ACTIVE);
    for req in server.incoming_requests() {
        // Held by the request's thread while it lives.
        let Some(slot) = active.take() else {
            log::warn!(
                "{MAX_ACTIVE} requests in progress: refusing {} {}",
                req.method(),
                req.url()
            );
            let body =
                json!({"error": format!("serve is busy ({MAX_ACTIVE} requests in progress); try again")});
            let _ = req.respond(json_response(503, &body));
            continue;
        };
        let host = Arc::clone(host);
        let spawned = thread::Builder::new()
            .name("api".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                handle(req, &host)
            });
        if let Err(err) = spawned {
            log::error!("cannot start a request thread: {err}");
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    let h = Header::from_bytes("Content-Type", "application/json").expect("static header");
    Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(h)
}

fn handle(mut req: Request, host: &Host) {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query: BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();

    // Streaming endpoints write their own responses.
    match (&method, segs.as_slice()) {
        (Method::Get, ["v1", "instances", id, "tether", "stream"]) => return stream(req, host, id, &query),
        (Method::Get, ["v1", "instances", id, "logs"]) if query.get("follow") == Some(&"1") => {
            return follow_logs(req, host, id)
        }
        (Method::Post, ["v1", "instances", id, "exec"]) => return super::exec::exec(req, host, id),
        _ => {}
    }

    let body = match read_body(&mut req) {
        Ok(b) => b,
        Err(err) => return respond(req, Err(err)),
    };
    let reply = match (&method, segs.as_slice()) {
        (Method::Post, ["v1", "instances", id, "tether"]) => ingress(host, id, &body),
        (Method::Get, ["v1", "secrets"]) => Ok((200, json!({"secrets": host.secrets.names()}))),
        (Method::Get, ["v1", "secrets", name]) => host
            .secrets
            .get(name)
            .map(|v| (200, json!({"name": name, "value": v})))
            .map_err(secret_error),
        (Method::Put, ["v1", "secrets", name]) => put_secret(host, name, &body),
        (Method::Delete, ["v1", "secrets", name]) => host
            .secrets
            .remove(name)
            .map(|_| (200, json!({"deleted": name})))
            .map_err(secret_error),
        (Method::Post, ["v1", "instances"]) => create(host, &body),
        (Method::Get, ["v1", "instances"]) => list(host),
        (Method::Get, ["v1", "instances", id]) => {
            with(host, id).and_then(|h| info(&h)).map(|i| (200, json!(i)))
        }
        (Method::Post, ["v1", "instances", id, action @ ("start" | "stop" | "pause")]) => {
            action_cmd(host, id, action)
        }
        (Method::Delete, ["v1", "instances", id]) => delete(host, id, &query),
        (Method::Get, ["v1", "instances", id, "logs"]) => logs(host, id, &query),
        (Method::Delete, ["v1", "workspaces", name]) => delete_workspace(host, name),
        (Method::Get, ["v1", "status"]) => Ok((
            200,
            json!({"server": "aegis-kit serve", "version": env!("CARGO_PKG_VERSION")}),
        )),
        _ if segs.first() == Some(&"v1") => Err(e(404, format!("no route for {method} {path}"))),
        _ => Err(e(404, "not found")),
    };
    respond(req, reply)
}

pub(super) fn respond(req: Request, reply: Reply) {
    let resp = match reply {
        Ok((status, body)) => json_response(status, &body),
        Err(err) => json_response(err.status, &json!({"error": err.message})),
    };
    if let Err(err) = req.respond(resp) {
        log::debug!("response not delivered: {err}");
    }
}

pub(super) fn read_body(req: &mut Request) -> Result<Vec<u8>, ApiError> {
    if req.body_length().is_some_and(|l| l > MAX_BODY) {
        return Err(e(413, format!("body larger than {MAX_BODY} bytes")));
    }
    let mut body = Vec::new();
    req.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|err| e(400, format!("cannot read body: {err}")))?;
    if body.len() > MAX_BODY {
        return Err(e(413, format!("body larger than {MAX_BODY} bytes")));
    }
    Ok(body)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn with(host: &Host, id: &str) -> Result<Handle, ApiError> {
    host.find(id)
        .ok_or_else(|| e(404, format!("instance {id:?} not found")))
}

pub(super) fn ask<T>(
    h: &Handle,
    make: impl FnOnce(crossbeam_channel::Sender<T>) -> Cmd,
    wait: Duration,
) -> Result<T, ApiError> {
    let (tx, rx) = bounded(1);
    h.tx.send(make(tx))
        .map_err(|_| e(503, "instance supervisor is gone"))?;
    rx.recv_timeout(wait)
        .map_err(|_| e(503, "instance did not answer in time"))
}

fn info(h: &Handle) -> Result<Info, ApiError> {
    ask(h, Cmd::Info, Duration::from_secs(5))
}

fn ingress(host: &Host, id: &str, body: &[u8]) -> Reply {
    let frame = Frame::parse(body).map_err(|err| e(400, err.to_string()))?;
    if frame.direction() != Direction::Ingress {
        return Err(e(
            400,
            format!(
                "{} is an egress frame type; only user.* and control.* frames can be sent to an instance",
                frame.kind
            ),
        ));
    }
    let h = with(host, id)?;
    ask(&h, |tx| Cmd::Ingress(frame, tx), WAKE_WAIT)??;
    Ok((202, json!({"status": "accepted"})))
}

fn put_secret(host: &Host, name: &str, body: &[u8]) -> Reply {
    let v: Value = serde_json::from_slice(body).map_err(|err| e(400, format!("invalid JSON: {err}")))?;
    let value = v["value"]
        .as_str()
        .ok_or_else(|| e(400, "body must be {\"value\": \"...\"}"))?;
    host.secrets.set(name, value).map_err(secret_error)?;
    Ok((200, json!({"name": name})))
}

fn secret_error(err: super::secrets::SecretError) -> ApiError {
    use super::secrets::SecretError::*;
    match err {
        NotFound(_) => e(404, err.to_string()),
        BadName(_) => e(400, err.to_string()),
        _ => e(500, err.to_string()),
    }
}

fn create(host: &Host, body: &[u8]) -> Reply {
    let v: Value = serde_json::from_slice(body).map_err(|err| e(400, format!("invalid JSON: {err}")))?;
    let name = v["name"]
        .as_str()
        .ok_or_else(|| e(400, "\"name\" (string) is required"))?;
    valid_name(name).map_err(|m| e(400, m))?;
    let _changing = host.changing.lock().expect("changing lock");
    if host.find(name).is_some() {
        return Err(e(409, format!("instance {name:?} already exists")));
    }
    let strings = |field: &str| -> Result<Vec<String>, ApiError> {
        match &v[field] {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| e(400, format!("\"{field}\" must be an array of strings")))
                })
                .collect(),
            _ => Err(e(400, format!("\"{field}\" must be an array of strings"))),
        }
    };
    let mut command = strings("command")?;
    if command.is_empty() {
        command = vec!["aegis-agent".into()];
    }
    let secrets = strings("secrets")?;
    for s in &secrets {
        host.secrets
            .get(s)
            .map_err(|err| e(400, format!("--secret {s}: {err}")))?;
    }
    let env: BTreeMap<String, String> = match &v["env"] {
        Value::Null => BTreeMap::new(),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                x.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| e(400, "\"env\" values must be strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(e(400, "\"env\" must be an object of strings")),
    };
    let workspace = match &v["workspace"] {
        Value::Null => None,
        Value::String(w) if w.is_empty() => None,
        Value::String(w) => Some(chosen_workspace(host, w)?),
        _ => {
            return Err(e(
                400,
                "\"workspace\" must be a string: a name or an absolute path",
            ))
        }
    };
    let def = InstanceDef {
        name: name.to_string(),
        id: format!("inst-{:x}", super::first_seq()),
        command,
        env,
        secrets,
        kit: v["kit"].as_str().map(str::to_string),
        image: v["image"].as_str().map(str::to_string),
        created_at: tether::time::now_rfc3339(),
        sandbox: match &v["sandbox"] {
            Value::Null => Default::default(),
            other => serde_json::from_value(other.clone())
                .map_err(|err| e(400, format!("\"sandbox\": {err} (fields: level auto|strict|none, net host|none|{{ports: [443]}}, memory_mb, max_procs)")))?,
        },
        workspace,
    };
    let reused = def.workspace.is_none() && host.registry.kept_workspace(name).is_some();
    host.registry
        .save(&def)
        .map_err(|err| e(500, format!("cannot save instance: {err}")))?;
    let h = host
        .adopt(def)
        .map_err(|err| e(500, format!("cannot supervise instance: {err}")))?;
    let mut created = json!(info(&h)?);
    created["workspace_reused"] = json!(reused);
    Ok((201, created))
}

/// The workspace the user chose, checked against what confines every instance.
fn chosen_workspace(host: &Host, requested: &str) -> Result<std::path::PathBuf, ApiError> {
    let taken: Vec<(String, std::path::PathBuf)> = host
        .handles()
        .iter()
        .map(|h| (h.def.name.clone(), host.registry.workspace_of(&h.def)))
        .collect();
    let sandbox = &host.config.sandbox;
    let binaries = [sandbox.exe.clone(), host.config.agent_bin.clone()];
    let guarded = super::chosen_workspace::Guarded {
        hidden: &sandbox.hide_dirs,
        hidden_files: &sandbox.hide_files,
        binaries: &binaries,
        taken: &taken,
    };
    super::chosen_workspace::resolve(requested, &host.registry, &guarded)
}

/// `GET /v1/instances`: the instances, and [ours] the workspaces no instance has (those
/// removed instances left) and the named workspaces, with the instance using each.
fn list(host: &Host) -> Reply {
    let handles = host.handles();
    let infos: Vec<Info> = handles.iter().filter_map(|h| info(h).ok()).collect();
    let kept: Vec<Value> = host
        .registry
        .kept_workspaces()
        .into_iter()
        .map(|(name, path)| json!({"name": name, "path": path}))
        .collect();
    let named: Vec<Value> = host
        .registry
        .named_workspaces()
        .into_iter()
        .map(|(name, path)| {
            let user = user_of(&handles, &path);
            json!({"name": name, "path": path, "used_by": user})
        })
        .collect();
    Ok((
        200,
        json!({"instances": infos, "kept_workspaces": kept, "named_workspaces": named}),
    ))
}

/// The instance among `handles` that works in the named workspace at `path`, if any.
fn user_of(handles: &[Handle], path: &std::path::Path) -> Option<String> {
    // A chosen workspace is kept resolved.
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    handles
        .iter()
        .find(|h| h.def.workspace.as_ref() == Some(&real))
        .map(|h| h.def.name.clone())
}

fn action_cmd(host: &Host, id: &str, action: &str) -> Reply {
    let h = with(host, id)?;
    let make = match action {
        "start" => Cmd::Start,
        "stop" => Cmd::Stop,
        _ => Cmd::Pause,
    };
    ask(&h, make, WAKE_WAIT)??;
    Ok((200, json!(info(&h)?)))
}

/// `DELETE /v1/instances/{id}[?purge=1]`. The instance's own workspace stays for an
/// instance of that name to take up again, unless `purge` (aegisd deletes the one it
/// made, which lost users their agent's memory when they re-created it to change a
/// setting); `purge` also deletes the workspace a removed instance left (by its name). A
/// chosen workspace (`--workspace`) is never deleted, as aegisd keeps it.
fn delete(host: &Host, id: &str, query: &BTreeMap<&str, &str>) -> Reply {
    let purge = match query.get("purge").copied() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => return Err(e(400, format!("purge is 1 or 0, not {other:?}"))),
    };
    let Some(h) = host.find(id) else {
        let _changing = host.changing.lock().expect("changing lock");
        // The name is checked first: it becomes a path under the instances folder.
        let kept = valid_name(id)
            .ok()
            .and_then(|()| host.registry.kept_workspace(id));
        return match kept {
            Some(workspace) if purge => {
                host.registry
                    .remove(id, true)
                    .map_err(|err| e(500, format!("cannot remove {}: {err}", workspace.display())))?;
                Ok((
                    200,
                    json!({"deleted": null, "workspace": workspace, "workspace_kept": false}),
                ))
            }
            Some(workspace) => Err(e(
                404,
                format!(
                    "instance {id:?} not found; the workspace an earlier {id} left is kept at {} \
                     (`aegis-kit instance rm {id} --purge` deletes it)",
                    workspace.display()
                ),
            )),
            None => Err(e(404, format!("instance {id:?} not found"))),
        };
    };
    host.stop_daemons(&h.def.name);
    ask(&h, Cmd::Shutdown, Duration::from_secs(15))?;
    let _changing = host.changing.lock().expect("changing lock");
    host.instances
        .write()
        .expect("instances lock")
        .remove(&h.def.name);
    h.store.close();
    host.config.chosen.set(&h.def.name, None);
    host.registry
        .remove(&h.def.name, purge)
        .map_err(|err| e(500, format!("cannot remove files: {err}")))?;
    let chosen = h.def.workspace.is_some();
    Ok((
        200,
        json!({
            "deleted": h.def.name,
            "workspace": host.registry.workspace_of(&h.def),
            "workspace_kept": !purge || chosen,
            "workspace_chosen": chosen,
        }),
    ))
}

/// [ours] `DELETE /v1/workspaces/{name}`: a named workspace (`--workspace NAME`) that no
/// instance uses, with everything in it. One an instance uses is refused (409): delete
/// that instance first, so no agent ever runs in a folder deleted under it.
fn delete_workspace(host: &Host, name: &str) -> Reply {
    // The name becomes a path under the workspaces folder.
    valid_name(name).map_err(|why| e(400, format!("workspace name {name:?}: {why}")))?;
    let _changing = host.changing.lock().expect("changing lock");
    let path = host.registry.named_workspace(name);
    // Not `exists()`: that follows a link, and a link put there is deleted as a link.
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(e(404, format!("no named workspace {name:?}")));
    }
    if let Some(user) = user_of(&host.handles(), &path) {
        return Err(e(
            409,
            format!(
                "workspace {name:?} is instance {user}'s: `aegis-kit instance rm {user}` first                  (which keeps the workspace)"
            ),
        ));
    }
    // A link put there goes itself, never what it points to (remove_dir_all follows none).
    std::fs::remove_dir_all(&path)
        .map_err(|err| e(500, format!("cannot delete {}: {err}", path.display())))?;
    log::info!("named workspace {name} deleted ({})", path.display());
    Ok((200, json!({"deleted": name, "path": path})))
}

fn logs(host: &Host, id: &str, query: &BTreeMap<&str, &str>) -> Reply {
    let h = with(host, id)?;
    let path = host.registry.instance_dir(&h.def.name).join("instance.log");
    let text = std::fs::read(&path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let tail: usize = query
        .get("tail")
        .and_then(|t| t.parse().ok())
        .unwrap_or(usize::MAX);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(tail);
    Ok((200, json!({"lines": &lines[start..]})))
}

/// Write a chunked response head on the raw connection.
pub(super) fn start_chunked(req: Request, content_type: &str) -> Box<dyn Write + Send> {
    let mut w = req.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    );
    let _ = w.write_all(head.as_bytes()).and_then(|_| w.flush());
    w
}

pub(super) fn write_chunk(w: &mut dyn Write, data: &[u8]) -> std::io::Result<()> {
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn stream(req: Request, host: &Host, id: &str, query: &BTreeMap<&str, &str>) {
    let after = match query.get("after").map(|a| a.parse::<u64>()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return respond(req, Err(e(400, "after must be a sequence number"))),
    };
    let h = match with(host, id) {
        Ok(h) => h,
        Err(err) => return respond(req, Err(err)),
    };
    let mut sub = h.store.subscribe(after);
    let mut w = start_chunked(req, "application/x-ndjson");
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut last_write = Instant::now();
    loop {
        match sub.next_batch(256, KEEPALIVE) {
            Ok(batch) if batch.is_empty() => {
                if last_write.elapsed() >= KEEPALIVE && write_chunk(&mut *w, b"\n").is_err() {
                    return;
                }
                last_write = Instant::now();
            }
            Ok(batch) => {
                buf.clear();
                for entry in batch {
                    buf.extend_from_slice(entry.json.as_bytes());
                    buf.push(b'\n');
                }
                if write_chunk(&mut *w, &buf).is_err() {
                    return; // the client went away; it resumes with ?after=
                }
                last_write = Instant::now();
            }
            Err(StoreError::Lagged { missed_from, oldest }) => {
                log::warn!("{id}: stream reader lost frames {missed_from}..{}", oldest - 1);
            }
            Err(StoreError::Closed) => {
                // The end of the chunked body must leave now: the writer does not flush on drop.
                let _ = w.write_all(b"0\r\n\r\n").and_then(|_| w.flush());
                return;
            }
        }
    }
}

fn follow_logs(req: Request, host: &Host, id: &str) {
    let h = match with(host, id) {
        Ok(h) => h,
        Err(err) => return respond(req, Err(err)),
    };
    let path = host.registry.instance_dir(&h.def.name).join("instance.log");
    let mut w = start_chunked(req, "text/plain; charset=utf-8");
    let mut pos = 0u64;
    loop {
        let mut chunk = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // rotated
            }
            if f.seek(SeekFrom::Start(pos)).is_ok() {
                let _ = f.take(1 << 20).read_to_end(&mut chunk);
            }
        }
        if !chunk.is_empty() {
            pos += chunk.len() as u64;
            if write_chunk(&mut *w, &chunk).is_err() {
                return; // the client went away
            }
        } else {
            // A log file gives no wake-up event we can block on portably: poll gently.
            thread::sleep(Duration::from_millis(200));
        }
    }
}
