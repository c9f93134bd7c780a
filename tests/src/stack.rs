//! The whole kit on one machine for end-to-end tests: a fake LLM and a fake Telegram,
//! the real `aegis-kit serve` running real `aegis-agent`s, and the real `aegis-gateway`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tether::AegisClient;

use crate::llm::FakeLlm;
use crate::proc::{bin, command, temp_dir, Proc, TempDir};
use crate::telegram::FakeTelegram;

/// Default wait for anything in an end-to-end test.
pub const T: Duration = Duration::from_secs(30);

/// A running kit.
pub struct Stack {
    /// The API socket.
    pub socket: PathBuf,
    /// `aegis-kit serve`.
    pub serve: Proc,
    /// `aegis-gateway`, once started.
    pub gateway: Option<Proc>,
    /// The fake Telegram.
    pub telegram: FakeTelegram,
    /// The fake LLM.
    pub llm: FakeLlm,
    /// Extra environment of serve (kept for restarts).
    pub serve_env: Vec<(String, String)>,
    /// `AEGIS_HOME` of every process; last, so it is removed after they are gone.
    pub home: TempDir,
}

/// Start `aegis-kit serve` in `home` with extra serve flags.
pub fn start_serve(home: &Path, socket: &Path, args: &[&str]) -> Proc {
    start_serve_with_env(home, socket, args, &[])
}

/// Start `aegis-kit serve` in `home` with extra serve flags and environment.
pub fn start_serve_with_env(home: &Path, socket: &Path, args: &[&str], env: &[(String, String)]) -> Proc {
    let mut cmd = command("aegis-kit");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("AEGIS_HOME", home)
        .arg("--socket")
        .arg(socket)
        .arg("serve")
        .arg("--agent")
        .arg(bin("aegis-agent"))
        .args(args);
    let p = Proc::spawn(cmd);
    p.wait_for("aegis-kit serve listening", T);
    p
}

impl Stack {
    /// Serve with an instance `my-agent` answering through `llm`, and a fake Telegram
    /// whose bot token is stored as the secret `TELEGRAM_BOT_TOKEN`.
    pub fn new(name: &str, llm: FakeLlm, serve_args: &[&str]) -> Stack {
        Stack::with_env(name, llm, serve_args, &[])
    }

    /// As `new`, with extra environment variables for the agent instance.
    pub fn with_env(name: &str, llm: FakeLlm, serve_args: &[&str], env: &[(&str, &str)]) -> Stack {
        Stack::with_serve_env(name, llm, serve_args, env, &[])
    }

    /// As `with_env`, with extra environment variables for serve itself.
    pub fn with_serve_env(
        name: &str,
        llm: FakeLlm,
        serve_args: &[&str],
        env: &[(&str, &str)],
        serve_env: &[(&str, &str)],
    ) -> Stack {
        let serve_env: Vec<(String, String)> = serve_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let home = temp_dir(name);
        let socket = home.join("aegisd.sock");
        let serve = start_serve_with_env(&home, &socket, serve_args, &serve_env);
        let telegram = FakeTelegram::start("123456:TEST-token-abcdefghijklmnop");
        let c = AegisClient::new(&socket);
        c.put_secret("OPENAI_API_KEY", "sk-stack-test").unwrap();
        c.put_secret("TELEGRAM_BOT_TOKEN", telegram.token()).unwrap();
        let mut vars = serde_json::Map::new();
        vars.insert("OPENAI_BASE_URL".into(), json!(llm.url()));
        for (k, v) in env {
            vars.insert(k.to_string(), json!(v));
        }
        let body = json!({"name": "my-agent", "secrets": ["OPENAI_API_KEY"], "env": vars});
        c.request("POST", "/v1/instances", Some(&body)).unwrap();
        Stack {
            home,
            socket,
            serve,
            gateway: None,
            telegram,
            llm,
            serve_env,
        }
    }

    /// The API client.
    pub fn client(&self) -> AegisClient {
        AegisClient::new(&self.socket)
    }

    /// Write `gateway.json` with these `allowed_chats`.
    pub fn write_gateway_config(&self, allowed: serde_json::Value) -> PathBuf {
        let path = self.home.join("gateway.json");
        let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
            "allowed_chats": allowed, "api_url": self.telegram.url()}});
        std::fs::write(&path, cfg.to_string()).unwrap();
        path
    }

    /// A gateway command with this stack's environment.
    pub fn gateway_command(&self) -> std::process::Command {
        let mut cmd = command("aegis-gateway");
        cmd.env("AEGIS_HOME", &self.home)
            .arg("--socket")
            .arg(&self.socket);
        cmd
    }

    /// Start the gateway (config must exist) and wait until it runs.
    pub fn start_gateway(&mut self) {
        let p = Proc::spawn(self.gateway_command());
        p.wait_for("egress stream of my-agent connected", T);
        self.gateway = Some(p);
    }

    /// The agent instance's folder.
    pub fn instance_dir(&self) -> PathBuf {
        self.home.join("kit/instances/my-agent")
    }

    /// Pid of the running agent, if any.
    pub fn agent_pid(&self) -> Option<i64> {
        self.client()
            .request("GET", "/v1/instances/my-agent", None)
            .ok()?["pid"]
            .as_i64()
    }

    /// Restart serve (SIGTERM, then start again with the same flags).
    pub fn restart_serve(&mut self, serve_args: &[&str]) {
        self.serve.terminate(T).expect("serve exits on SIGTERM");
        self.serve = start_serve_with_env(&self.home, &self.socket, serve_args, &self.serve_env);
    }

    /// Kill serve with SIGKILL (its agents live on, orphaned, as after a host crash of
    /// serve alone), then start it again.
    pub fn kill9_serve(&mut self) {
        self.serve.kill9();
    }

    /// Start serve again after `kill9_serve`.
    pub fn start_serve_again(&mut self, serve_args: &[&str]) {
        self.serve = start_serve_with_env(&self.home, &self.socket, serve_args, &self.serve_env);
    }
}
