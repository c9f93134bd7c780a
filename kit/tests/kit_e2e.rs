//! Packaging: install into a temporary prefix and HOME, `list` with a healthy, a missing
//! and a broken kit, `up`/`down` with and without a gateway config, and presets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aegis_e2e::proc::{bin, temp_dir};
use aegis_e2e::telegram::FakeTelegram;
use serde_json::json;

struct Env {
    prefix: PathBuf,
    home: aegis_e2e::proc::TempDir,
}

impl Env {
    fn new(name: &str) -> Env {
        let home = temp_dir(name);
        let prefix = home.join("prefix");
        let e = Env { prefix, home };
        let out = e.run(
            &bin("aegis-kit"),
            &["install", "--prefix", e.prefix.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        e
    }

    fn installed(&self) -> PathBuf {
        self.prefix.join("bin/aegis-kit")
    }

    fn run(&self, exe: &Path, args: &[&str]) -> Output {
        let mut c = Command::new(exe);
        c.env_clear()
            .env("HOME", &self.home)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.prefix.join("bin").display()),
            )
            .args(args);
        c.output().unwrap()
    }

    fn kit(&self, args: &[&str]) -> (bool, String) {
        let out = self.run(&self.installed(), args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let mut c = Command::new(bin("aegis-kit"));
        c.env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/bin:/bin")
            .arg("down");
        let _ = c.output();
    }
}

#[test]
fn install_is_idempotent_and_list_reports_ok_missing_and_broken() {
    let e = Env::new("kit-install");
    for b in ["aegis-agent", "aegis-gateway", "aegis-kit"] {
        assert!(e.prefix.join("bin").join(b).exists(), "{b}");
    }
    let manifest = e.home.join(".aegis/kits/agent.json");
    assert!(manifest.exists());
    let (ok, out) = e.kit(&["install", "--prefix", e.prefix.to_str().unwrap()]);
    assert!(ok && out.contains("up to date"), "{out}");
    let (_, out) = e.kit(&["list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("VERSION") && lines[0].contains("STATUS"));
    assert!(
        lines[1].starts_with("agent")
            && lines[1].contains(" ok ")
            && lines[1].contains("Messaging-driven LLM agent"),
        "{out}"
    );
    std::fs::remove_file(e.prefix.join("bin/aegis-gateway")).unwrap();
    std::fs::write(e.home.join(".aegis/kits/bad.json"), "{ not json").unwrap();
    let (_, out) = e.kit(&["list"]);
    assert!(out.contains("missing: aegis-gateway"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bad") && l.contains("broken:") && l.contains("bad.json")),
        "{out}"
    );
    let (ok, out) = e.kit(&["uninstall", "--prefix", e.prefix.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(!e.installed().exists() && !manifest.exists());
}

#[test]
fn up_and_down_with_and_without_a_gateway_config() {
    let e = Env::new("kit-up");
    let (ok, out) = e.kit(&["up"]);
    assert!(ok, "{out}");
    assert!(out.contains("aegisd: started"), "{out}");
    assert!(
        out.contains("aegis-gateway: no config (create ~/.aegis/gateway.json to enable)"),
        "{out}"
    );
    let (ok, out) = e.kit(&["up"]);
    assert!(
        ok && out.contains("aegisd: already running"),
        "a second up is harmless: {out}"
    );

    // With a config, the gateway starts too.
    let tg = FakeTelegram::start("42:kit-up-token");
    let out = e.run(
        &e.installed(),
        &["secret", "set", "TELEGRAM_BOT_TOKEN", tg.token()],
    );
    assert!(out.status.success());
    let out = e.run(
        &e.installed(),
        &["instance", "start", "--kit", "agent", "--name", "my-agent"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent", "allowed_chats": ["*"], "api_url": tg.url()}});
    std::fs::write(e.home.join(".aegis/gateway.json"), cfg.to_string()).unwrap();
    let (ok, out) = e.kit(&["up"]);
    assert!(ok && out.contains("aegis-gateway: started (agent kit)"), "{out}");
    let (_, out) = e.kit(&["up"]);
    assert!(out.contains("aegis-gateway: already running"), "{out}");
    let pid: i32 = std::fs::read_to_string(e.home.join(".aegis/aegis-gateway.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let serve_pid: i32 = std::fs::read_to_string(e.home.join(".aegis/serve.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The gateway polls the fake Telegram.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tg.calls_of("getUpdates").is_empty() {
        assert!(std::time::Instant::now() < deadline, "gateway never polled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = e.kit(&["down"]);
    assert!(
        ok && out.contains("aegis-gateway: stopped") && out.contains("aegisd: stopped"),
        "{out}"
    );
    for p in [pid, serve_pid] {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        );
    }
    // --no-daemons starts serve only.
    let (ok, out) = e.kit(&["up", "--no-daemons"]);
    assert!(
        ok && out.contains("aegisd: started") && !out.contains("aegis-gateway"),
        "{out}"
    );
}

#[test]
fn preset_supplies_defaults_and_flags_override_them() {
    let e = Env::new("kit-preset");
    let (ok, out) = e.kit(&["up", "--no-daemons"]);
    assert!(ok, "{out}");
    let (ok, out) = e.kit(&[
        "instance",
        "start",
        "--kit",
        "agent",
        "--name",
        "dbg",
        "--image",
        "node:20-alpine",
        "--",
        "sh",
        "-c",
        "sleep 30",
    ]);
    assert!(ok, "{out}");
    let (_, info) = e.kit(&["instance", "info", "dbg"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["command"], json!(["sh", "-c", "sleep 30"]));
    assert_eq!(v["image"], "node:20-alpine");
    assert_eq!(v["kit"], "agent");
    assert_eq!(v["state"], "running");
    let (ok, out) = e.kit(&["instance", "start", "--kit", "nope", "--name", "x"]);
    assert!(!ok && out.contains("kit \"nope\" is not installed"), "{out}");
}
