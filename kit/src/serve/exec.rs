//! `POST /v1/instances/{id}/exec` `{"command": [...], "env"?: {...}}`, aegisd's exec API
//! (what the gateway's `/exec` and `aegis instance exec` use): the command runs in the
//! instance's sandbox and workspace, and its output streams back as aegisd's NDJSON: a
//! first line `{exec_id, started_at}`, one log entry per output line
//! (`{ts, stream, line, source, exec_id}`), then `{exec_id, exit_code, done: true}`.
//!
//! Unlike a VM's, the process is serve's to watch: it is killed (its whole process group)
//! when the client goes away, noticed at the latest by a keep-alive newline every
//! `KEEPALIVE`, or after `RUN_LIMIT`. An instance without the sandbox is refused (403):
//! there it would be a shell on this machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, RecvTimeoutError, Sender};
use serde_json::{json, Value};
use tiny_http::Request;

use super::api::{ask, e, read_body, respond, start_chunked, with, write_chunk};
use super::supervisor::{signal_group, Cmd};
use super::Host;
use tether::slots::Slots;
use tether::time::now_rfc3339 as rfc3339_now;

/// Commands running at once across serve; more get a 429.
pub const MAX_RUNNING: usize = 8;
/// Longest run; then the command is killed.
pub const RUN_LIMIT: Duration = Duration::from_secs(600);
/// A silent command's stream gets a newline this often (which notices a client gone).
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Longest output line sent; a longer one is split.
const LINE_CAP: u64 = 64 * 1024;

/// The commands running across serve.
static RUNNING: LazyLock<Slots> = LazyLock::new(|| Slots::new(MAX_RUNNING));

/// What a request asks to run.
#[derive(Debug, PartialEq)]
struct ExecRequest {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

/// The command and environment of a request body.
fn parse(body: &[u8]) -> Result<ExecRequest, String> {
    let v: Value = serde_json::from_slice(body).map_err(|err| format!("invalid request: {err}"))?;
    let command: Vec<String> = match &v["command"] {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("command must be a list of strings")?,
        Value::Null => Vec::new(),
        _ => return Err("command must be a list of strings".into()),
    };
    if command.first().is_none_or(|c| c.is_empty()) {
        return Err("command is required".into());
    }
    let env = match &v["env"] {
        Value::Null => Vec::new(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect::<Option<_>>()
            .ok_or("env values must be strings")?,
        _ => return Err("env must be an object of strings".into()),
    };
    Ok(ExecRequest { argv: command, env })
}

/// Handle one exec request.
pub fn exec(mut req: Request, host: &Host, id: &str) {
    let body = match read_body(&mut req) {
        Ok(b) => b,
        Err(err) => return respond(req, Err(err)),
    };
    let ExecRequest { argv, env } = match parse(&body) {
        Ok(p) => p,
        Err(why) => return respond(req, Err(e(400, why))),
    };
    let h = match with(host, id) {
        Ok(h) => h,
        Err(err) => return respond(req, Err(err)),
    };
    let Some(_slot) = RUNNING.take() else {
        return respond(
            req,
            Err(e(
                429,
                format!("{MAX_RUNNING} commands are running; try again later"),
            )),
        );
    };
    let mut cmd = match ask(&h, |tx| Cmd::Exec(argv.clone(), tx), Duration::from_secs(10)) {
        Ok(Ok(c)) => c,
        Ok(Err(err)) | Err(err) => return respond(req, Err(err)),
    };
    cmd.envs(env).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => {
            return respond(
                req,
                Err(e(500, format!("exec failed: cannot run {}: {err}", argv[0]))),
            )
        }
    };
    let pid = child.id();
    let exec_id = format!("exec-{pid}");
    log::info!("{}: exec {exec_id}: {:?}", h.def.name, argv);
    let (tx, rx) = unbounded();
    let out = child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>);
    let err = child.stderr.take().map(|o| Box::new(o) as Box<dyn Read + Send>);
    for (stream, pipe) in [("stdout", out), ("stderr", err)] {
        if let Some(pipe) = pipe {
            let tx = tx.clone();
            let _ = thread::Builder::new()
                .name("exec-pipe".into())
                .stack_size(64 * 1024)
                .spawn(move || forward(stream, pipe, &tx));
        }
    }
    drop(tx);
    let mut w = start_chunked(req, "application/x-ndjson");
    let line = |v: Value| format!("{v}\n").into_bytes();
    let started = json!({"exec_id": exec_id, "started_at": rfc3339_now()});
    let mut client_gone = write_chunk(&mut *w, &line(started)).is_err();
    let deadline = Instant::now() + RUN_LIMIT;
    while !client_gone {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(KEEPALIVE)) {
            Ok((stream, text)) => {
                let entry = json!({"ts": rfc3339_now(), "stream": stream, "line": text,
                    "source": "exec", "exec_id": exec_id});
                client_gone = write_chunk(&mut *w, &line(entry)).is_err();
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                log::warn!("{}: exec {exec_id} ran {RUN_LIMIT:?}; killed", h.def.name);
                signal_group(pid, libc::SIGKILL);
                let note = json!({"ts": rfc3339_now(), "stream": "stderr", "source": "exec", "exec_id": exec_id,
                    "line": format!("aegis-kit serve: killed after {} minutes", RUN_LIMIT.as_secs() / 60)});
                client_gone = write_chunk(&mut *w, &line(note)).is_err();
                break;
            }
            Err(RecvTimeoutError::Timeout) => client_gone = write_chunk(&mut *w, b"\n").is_err(),
        }
    }
    if client_gone {
        log::info!("{}: exec {exec_id}: the client went away; killed", h.def.name);
        signal_group(pid, libc::SIGKILL);
    }
    let status = child.wait();
    let code = status.ok().map_or(-1, |s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    if !client_gone {
        let done = json!({"exec_id": exec_id, "exit_code": code, "done": true});
        let _ = write_chunk(&mut *w, &line(done))
            .and_then(|_| w.write_all(b"0\r\n\r\n"))
            .and_then(|_| w.flush());
    }
}

/// Send each line of `pipe` (split at `LINE_CAP`, invalid UTF-8 replaced) until it closes.
fn forward(stream: &'static str, pipe: Box<dyn Read + Send>, tx: &Sender<(&'static str, String)>) {
    let mut r = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r).take(LINE_CAP).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                if tx.send((stream, text.to_string())).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_a_command_of_strings() {
        let r = parse(br#"{"command": ["sh", "-c", "ls"], "env": {"A": "1"}}"#).unwrap();
        assert_eq!(r.argv, ["sh", "-c", "ls"]);
        assert_eq!(r.env, [("A".to_string(), "1".to_string())]);
        for (body, why) in [
            (&b"{"[..], "invalid request"),
            (br#"{}"#, "command is required"),
            (br#"{"command": []}"#, "command is required"),
            (br#"{"command": [""]}"#, "command is required"),
            (br#"{"command": "ls"}"#, "command must be a list of strings"),
            (br#"{"command": ["ls", 1]}"#, "command must be a list of strings"),
            (
                br#"{"command": ["ls"], "env": {"A": 1}}"#,
                "env values must be strings",
            ),
        ] {
            let got = parse(body).unwrap_err();
            assert!(got.starts_with(why), "{}: {got}", String::from_utf8_lossy(body));
        }
    }
}
