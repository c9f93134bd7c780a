//! Escape attempts from inside `aegis-kit serve` instances. Each attempt runs twice: in
//! the default sandbox, where it must fail, and with `--sandbox none`, where it must
//! succeed, so every assertion here can fail.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aegis_e2e::proc::{bin, command, Proc, TempDir};
use serde_json::{json, Value};
use tether::AegisClient;

const T: Duration = Duration::from_secs(30);

/// A folder outside /tmp (the sandbox replaces /tmp, which would make a write there
/// fail for the wrong reason), removed on drop.
struct HostDir(PathBuf);

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Serve {
    _proc: Proc,
    home: TempDir,
    socket: PathBuf,
    pid: u32,
}

fn start_serve() -> Serve {
    let home = TempDir::new("sandbox");
    let socket = home.join("aegisd.sock");
    let mut cmd = command("aegis-kit");
    cmd.env("AEGIS_HOME", home.path())
        .arg("--socket")
        .arg(&socket)
        .args(["serve", "--pause-after", "0", "--agent"])
        .arg(bin("aegis-agent"));
    let proc = Proc::spawn(cmd);
    proc.wait_for("aegis-kit serve listening", T);
    let pid = proc.pid();
    Serve {
        _proc: proc,
        home,
        socket,
        pid,
    }
}

impl Serve {
    fn client(&self) -> AegisClient {
        AegisClient::new(&self.socket)
    }

    /// Run the probe as instance `name` with `sandbox` settings; its report lines.
    fn probe(&self, name: &str, sandbox: Value, env: &BTreeMap<&str, String>) -> BTreeMap<String, String> {
        let c = self.client();
        let body = json!({"name": name, "command": [bin("escape-probe")], "env": env, "sandbox": sandbox});
        c.request("POST", "/v1/instances", Some(&body)).unwrap();
        c.request("POST", &format!("/v1/instances/{name}/start"), None)
            .unwrap();
        let log = self.home.join(format!("kit/instances/{name}/instance.log"));
        let deadline = Instant::now() + T;
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("DONE") {
                break text;
            }
            assert!(Instant::now() < deadline, "probe {name} did not finish: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        text.lines()
            .filter_map(|l| {
                let (verdict, rest) = l.split_once(' ')?;
                let name = rest.split(' ').next()?.to_string();
                matches!(verdict, "ESCAPE" | "BLOCKED" | "forks" | "memory_mb").then(|| {
                    if verdict == "forks" || verdict == "memory_mb" {
                        (verdict.to_string(), name)
                    } else {
                        (name, verdict.to_string())
                    }
                })
            })
            .collect()
    }
}

const ATTEMPTS: [&str; 12] = [
    "read-master-key",
    "read-secrets",
    "read-other-instance",
    "read-other-chosen-workspace",
    "read-serve-log",
    "write-home",
    "see-serve-process",
    "signal-serve",
    "ptrace",
    "mount",
    "user-namespace",
    "connect-api-socket",
];

/// Root can do some of these even without a sandbox only because it is root.
fn root_only(attempt: &str) -> bool {
    matches!(attempt, "mount")
}

#[test]
fn escapes_fail_in_the_sandbox_and_succeed_without_it() {
    let s = start_serve();
    let c = s.client();
    // Things worth stealing: secrets (master.key, secrets.json), another instance's
    // files, serve's log.
    c.put_secret("SOME_KEY", "sk-very-secret").unwrap();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "other", "command": ["sh", "-c", "true"]})),
    )
    .unwrap();
    let other = s.home.join("kit/instances/other/workspace");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("private.txt"), "other's data").unwrap();
    std::fs::write(s.home.join("serve.log"), "serve log").unwrap();
    // An instance working in a folder of the user's, outside serve's state (and outside
    // /tmp, which every sandbox replaces anyway).
    let chosen = HostDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("escape-chosen-{}", std::process::id())),
    );
    std::fs::create_dir_all(&chosen.0).unwrap();
    std::fs::write(chosen.0.join("private.txt"), "their project").unwrap();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "theirs", "command": ["sh", "-c", "true"], "workspace": chosen.0})),
    )
    .unwrap();
    let host_home = HostDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("escape-home-{}", std::process::id())),
    );
    std::fs::create_dir_all(&host_home.0).unwrap();
    let vartmp = PathBuf::from(format!("/var/tmp/aegis-escape-{}", std::process::id()));
    let _vartmp_guard = HostDir(vartmp.clone());
    let env = |forks: u32, mb: u32| -> BTreeMap<&str, String> {
        BTreeMap::from([
            ("PROBE_SERVE_PID", s.pid.to_string()),
            (
                "PROBE_MASTER_KEY",
                s.home.join("kit/master.key").display().to_string(),
            ),
            (
                "PROBE_SECRETS",
                s.home.join("kit/secrets.json").display().to_string(),
            ),
            (
                "PROBE_OTHER_FILE",
                other.join("private.txt").display().to_string(),
            ),
            ("PROBE_SERVE_LOG", s.home.join("serve.log").display().to_string()),
            (
                "PROBE_OTHER_CHOSEN_FILE",
                chosen.0.join("private.txt").display().to_string(),
            ),
            (
                "PROBE_HOME_FILE",
                host_home.0.join("escaped.txt").display().to_string(),
            ),
            ("PROBE_VARTMP_FILE", vartmp.display().to_string()),
            ("PROBE_API_SOCKET", s.socket.display().to_string()),
            ("PROBE_FORKS", forks.to_string()),
            ("PROBE_MEMORY_MB", mb.to_string()),
        ])
    };

    let boxed = s.probe(
        "boxed",
        json!({"memory_mb": 64, "max_procs": 400}),
        &env(2000, 1024),
    );
    for a in ATTEMPTS {
        assert_eq!(
            boxed.get(a).map(String::as_str),
            Some("BLOCKED"),
            "{a} in the sandbox: {boxed:?}"
        );
    }
    assert!(!vartmp.exists(), "a write to /var/tmp reached the host");
    assert!(!host_home.0.join("escaped.txt").exists());
    let forks: usize = boxed["forks"].parse().unwrap();
    assert!(forks < 400, "fork bomb got {forks} processes");
    let mb: usize = boxed["memory_mb"].parse().unwrap();
    assert!(mb <= 64, "memory hog got {mb} MiB");
    println!("in the sandbox: {boxed:?}");
    // serve is still healthy after the bomb and the hog.
    let info = c.request("GET", "/v1/instances/other", None).unwrap();
    assert_eq!(info["name"], "other");
    assert!(
        c.request("GET", "/v1/instances/boxed", None).unwrap()["sandbox_in_force"]
            .as_str()
            .unwrap()
            .contains("landlock")
    );

    let open = s.probe("open", json!({"level": "none"}), &env(0, 0));
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    for a in ATTEMPTS {
        if root_only(a) && !root {
            continue;
        }
        assert_eq!(
            open.get(a).map(String::as_str),
            Some("ESCAPE"),
            "{a} without a sandbox: {open:?}"
        );
    }
    println!("without: {open:?}");
    assert!(vartmp.exists() && host_home.0.join("escaped.txt").exists());
}

#[test]
fn strict_refuses_what_auto_accepts_only_when_a_layer_is_missing() {
    // On this kernel every layer exists: strict boots like auto and says so.
    let s = start_serve();
    let c = s.client();
    c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "strict", "command": ["sh", "-c", "echo inside; sleep 5"], "sandbox": {"level": "strict", "net": "none"}})),
    )
    .unwrap();
    let info = c.request("POST", "/v1/instances/strict/start", None).unwrap();
    let line = info["sandbox_in_force"].as_str().unwrap().to_string();
    assert!(
        line.contains("user+mount+pid+ipc+uts+net namespaces") && line.contains("net: none"),
        "{line}"
    );
    let log = s.home.join("kit/instances/strict/instance.log");
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("inside")
    {
        assert!(Instant::now() < deadline, "the strict instance did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bad = c.request(
        "POST",
        "/v1/instances",
        Some(&json!({"name": "bad", "sandbox": {"level": "tight"}})),
    );
    let err = bad.unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("sandbox"), "{err}");
}

#[test]
fn a_port_allow_list_limits_tcp_connections() {
    let s = start_serve();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let env = BTreeMap::from([("PROBE_TCP", format!("127.0.0.1:{port}"))]);
    let allowed = s.probe("allowed", json!({"net": {"ports": [port]}}), &env);
    assert_eq!(
        allowed["connect-tcp"], "ESCAPE",
        "the listed port is reachable: {allowed:?}"
    );
    let other = if port == 443 { 444 } else { 443 };
    let denied = s.probe("denied", json!({"net": {"ports": [other]}}), &env);
    assert_eq!(
        denied["connect-tcp"], "BLOCKED",
        "an unlisted port is not: {denied:?}"
    );
    let open = s.probe("open", json!({}), &env);
    assert_eq!(
        open["connect-tcp"], "ESCAPE",
        "the host network by default: {open:?}"
    );
    let none = s.probe("cut", json!({"net": "none"}), &env);
    assert_eq!(
        none["connect-tcp"], "BLOCKED",
        "no network with net none: {none:?}"
    );
}
