//! The agent's HTTPS and proxies as deployed: a model behind TLS with a private CA
//! (`SSL_CERT_FILE`, `SSL_CERT_DIR`), a certificate no configured root vouches for, and a
//! CONNECT or SOCKS5 proxy in the environment that must carry the model's traffic but
//! never the harness's, chosen by scheme as Go chooses it.

use std::net::SocketAddr;

use serde_json::{json, Value};

use aegis_e2e::agent::{done_text, message, start_agent, usage_today, Agent, T};
use aegis_e2e::llm::FakeLlm;
use aegis_e2e::openrouter::{FakeOpenRouter, BASE};
use aegis_e2e::proc::{command, temp_dir, TempDir};
use aegis_e2e::proxy::ConnectProxy;
use aegis_e2e::socks::Socks5Proxy;
use aegis_e2e::tls::{fixture, TlsFront};

fn ca(name: &str) -> String {
    fixture(name).display().to_string()
}

/// An agent in `ws` whose model is behind `front`, trusting the test CA (`SSL_CERT_FILE`).
fn behind_the_test_ca(ws: &TempDir, front: &TlsFront) -> Agent {
    let ca = ca("ca.pem");
    start_agent(
        ws,
        &[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", &front.url),
            ("SSL_CERT_FILE", &ca),
        ],
    )
}

#[test]
fn a_model_behind_a_private_ca_is_reached_with_ssl_cert_file_or_ssl_cert_dir() {
    let llm = FakeLlm::echo_openai();
    let front = TlsFront::start(llm.url());
    let ws = temp_dir("tls-file");
    let a = behind_the_test_ca(&ws, &front);
    assert!(
        a.proc.log().contains(&format!(
            "trusting 1 certificate from SSL_CERT_FILE={} instead",
            ca("ca.pem")
        )),
        "{}",
        a.proc.log()
    );
    a.send(&message("1", "over TLS", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: over TLS");
    assert_eq!(llm.requests()[0].header("authorization"), Some("Bearer k"));

    // A folder of PEM files (the CA among others) works the same.
    let dir = temp_dir("tls-dir");
    std::fs::copy(fixture("other-ca.pem"), dir.join("other.pem")).unwrap();
    std::fs::copy(fixture("ca.pem"), dir.join("ours.crt")).unwrap();
    std::fs::write(dir.join("README"), "certificates for the agent").unwrap();
    let ws2 = temp_dir("tls-dir-ws");
    let b = start_agent(
        &ws2,
        &[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", &front.url),
            ("SSL_CERT_DIR", &dir.display().to_string()),
        ],
    );
    assert!(b
        .proc
        .log()
        .contains("trusting 2 certificates from SSL_CERT_DIR="));
    b.send(&message("1", "again", "m-1"));
    assert_eq!(done_text(&b.reply()), "echo: again");
}

#[test]
fn a_certificate_no_trusted_root_signed_is_refused_before_anything_is_sent() {
    let llm = FakeLlm::echo_openai();
    let front = TlsFront::start(llm.url());
    // The bundled Mozilla roots, then a bundle of another CA.
    for (name, extra) in [("tls-bundled", None), ("tls-other", Some(ca("other-ca.pem")))] {
        let ws = temp_dir(name);
        let mut env = vec![("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", front.url.as_str())];
        if let Some(extra) = &extra {
            env.push(("SSL_CERT_FILE", extra));
        }
        let a = start_agent(&ws, &env);
        a.send(&message("1", "secret question", "m-1"));
        let done = done_text(&a.reply());
        assert!(
            done.contains("cannot be verified") && done.contains("SSL_CERT_FILE"),
            "{name}: {done}"
        );
    }
    assert!(llm.requests().is_empty(), "no request reached the model");
}

#[test]
fn ssl_cert_file_or_dir_naming_nothing_usable_stops_the_agent_with_a_clear_message() {
    let ws = temp_dir("tls-bad");
    let missing = ws.join("missing.pem");
    for (var, value, says) in [
        (
            "SSL_CERT_FILE",
            missing.display().to_string(),
            "SSL_CERT_FILE: cannot read",
        ),
        ("SSL_CERT_FILE", ca("localhost.key"), "holds no PEM certificate"),
        (
            "SSL_CERT_DIR",
            ws.display().to_string(),
            "holds no PEM certificate",
        ),
    ] {
        let out = command("aegis-agent")
            .env("AEGIS_WORKSPACE", &*ws)
            .env("OPENAI_API_KEY", "k")
            .env(var, &value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains(&value), "{stderr}");
    }
}

#[test]
fn a_proxy_in_the_environment_carries_the_model_traffic_but_never_the_harness() {
    let llm = FakeLlm::echo_openai();
    let front = TlsFront::start(llm.url());
    let port: u16 = front
        .url
        .trim_start_matches("https://localhost:")
        .parse()
        .unwrap();
    let model = SocketAddr::from(([127, 0, 0, 1], port));
    // The proxy routes the model's host name (which only it can resolve) to the TLS front.
    let proxy = ConnectProxy::start(move |target| (target == "model.internal:443").then_some(model));
    let ws = temp_dir("proxy");
    let ca_path = ca("ca.pem");
    let mut env = vec![
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", "https://model.internal/v1"),
        ("SSL_CERT_FILE", ca_path.as_str()),
    ];
    for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "http_proxy"] {
        env.push((var, &proxy.url));
    }
    let a = start_agent(&ws, &env);
    a.send(&message("1", "via the proxy", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: via the proxy");
    // The harness (loopback) was reached directly, the model only through the proxy.
    assert_eq!(proxy.targets(), ["model.internal:443"]);
    assert_eq!(llm.requests()[0].path, "/v1/chat/completions");
}

#[test]
fn each_scheme_uses_its_own_proxy_as_in_go() {
    let llm = FakeLlm::echo_openai();
    let port: u16 = llm.url().rsplit(':').next().unwrap().parse().unwrap();
    // A model on the LAN over plain HTTP. 0.0.0.0 is not a loopback address, so proxies
    // apply to it, yet Linux connects it to this machine, where the stand-in listens.
    let lan_model = format!("http://0.0.0.0:{port}/v1");
    let target = format!("0.0.0.0:{port}");
    let route_target = target.clone();
    let proxy =
        ConnectProxy::start(move |t| (t == route_target).then(|| SocketAddr::from(([127, 0, 0, 1], port))));

    // HTTPS_PROXY (what a host sets for the cloud) never carries plain HTTP: the model on
    // the LAN is reached directly, as the Go agent reaches it.
    let proxied = proxy.url.as_str();
    assert_eq!(
        answer(&lan_model, &[("HTTPS_PROXY", proxied)], "direct"),
        "echo: direct"
    );
    assert!(proxy.targets().is_empty(), "{:?}", proxy.targets());
    // HTTP_PROXY carries it.
    assert_eq!(
        answer(&lan_model, &[("HTTP_PROXY", proxied)], "proxied"),
        "echo: proxied"
    );
    assert_eq!(proxy.targets(), std::slice::from_ref(&target));
    // NO_PROXY still exempts a host.
    let exempt = [("HTTP_PROXY", proxied), ("NO_PROXY", "example.com, 0.0.0.0")];
    assert_eq!(answer(&lan_model, &exempt, "exempt"), "echo: exempt");
    assert_eq!(proxy.targets(), [target]);
}

/// The reply of a fresh agent, its model at `model_url`, with `env` added, to `text`.
fn answer(model_url: &str, env: &[(&str, &str)], text: &str) -> String {
    let ws = temp_dir("proxy-answer");
    let ca_path = ca("ca.pem");
    let mut all = vec![
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", model_url),
        ("SSL_CERT_FILE", ca_path.as_str()),
    ];
    all.extend_from_slice(env);
    let a = start_agent(&ws, &all);
    a.send(&message("1", text, "m-1"));
    done_text(&a.reply())
}

#[test]
fn a_socks5_proxy_from_the_environment_carries_the_model_traffic() {
    let llm = FakeLlm::echo_openai();
    let front = TlsFront::start(llm.url());
    let tls_port: u16 = front.url.rsplit(':').next().unwrap().parse().unwrap();
    let plain_port: u16 = llm.url().rsplit(':').next().unwrap().parse().unwrap();
    let lan = format!("0.0.0.0:{plain_port}");
    let lan_target = lan.clone();
    // Names only the proxy resolves, and an address, each to its stand-in.
    let proxy = Socks5Proxy::start(Some(("ann", "s3cret:/@")), move |t| {
        if t == "model.internal:443" {
            Some(SocketAddr::from(([127, 0, 0, 1], tls_port)))
        } else {
            (t == lan_target).then(|| SocketAddr::from(([127, 0, 0, 1], plain_port)))
        }
    });
    // socks5h: the proxy resolves the name (where DNS is censored); socks5 with an
    // address; the password percent-encoded, as in curl.
    let socks5h = format!("socks5h://ann:s3cret%3A%2F%40@{}", proxy.addr);
    let socks5 = format!("socks5://ann:s3cret%3A%2F%40@{}", proxy.addr);
    let lan_model = format!("http://{lan}/v1");
    let via_name = answer(
        "https://model.internal/v1",
        &[("HTTPS_PROXY", &socks5h)],
        "socks5h",
    );
    assert_eq!(via_name, "echo: socks5h");
    assert_eq!(
        answer(&lan_model, &[("ALL_PROXY", &socks5)], "socks5"),
        "echo: socks5"
    );
    // The harness (loopback) never went through it.
    assert_eq!(proxy.targets(), ["model.internal:443".to_string(), lan]);
}

/// The agent with `env` on top of what reaches `router`.
fn routed_agent(router: &FakeOpenRouter, name: &str, env: &[(&str, &str)]) -> (TempDir, Agent) {
    let ws = temp_dir(name);
    let reach = router.env();
    let mut all: Vec<(&str, &str)> = reach.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(env);
    let a = start_agent(&ws, &all);
    (ws, a)
}

/// OpenRouter names Claude `anthropic/claude-...`: the agent asks for it by that name
/// (where it had read the prefix as Anthropic's, and, without Anthropic's key, had no
/// model at all), marks the prompt for Claude's cache in message parts, and counts what
/// the cache served and took.
#[test]
fn claude_through_openrouter_is_asked_by_its_own_name_and_reads_its_cache() {
    let router = FakeOpenRouter::start(&["openai/gpt-4o", "anthropic/claude-sonnet-4.6"]);
    let (ws, a) = routed_agent(
        &router,
        "openrouter-claude",
        &[
            ("OPENAI_API_KEY", "sk-or-v1-test"),
            ("OPENAI_BASE_URL", BASE),
            ("AEGIS_MODEL", "anthropic/claude-sonnet-4.6"),
        ],
    );
    assert!(
        a.proc.log().contains(
            "LLM provider: OpenAI (model anthropic/claude-sonnet-4.6, https://openrouter.ai/api/v1)"
        ),
        "{}",
        a.proc.log()
    );
    for (i, text) in ["hello", "and then?", "one more"].iter().enumerate() {
        a.send(&message("1", text, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), format!("echo: {text}"));
    }
    let chats = router.chats();
    assert!(chats.iter().all(|c| c["model"] == "anthropic/claude-sonnet-4.6"));
    let requests = router.llm.requests();
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-or-v1-test"));
    // The first message of a chat is not marked (nothing is going on to read it back);
    // the next ones are, the system prompt kept an hour.
    assert!(!chats[0].to_string().contains("cache_control"));
    assert_eq!(
        chats[1]["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"}),
        "{}",
        chats[1]
    );
    // The reply's log line comes after its last frame: waited for, as the record it adds up.
    a.proc.wait_for("from the cache", T);
    a.proc.wait_for(" billed", T);
    let used = &usage_today(ws.path())["anthropic/claude-sonnet-4.6"];
    assert_eq!(used["requests"], 3, "{used}");
    assert!(used["cache_write"].as_u64().unwrap() > 1024, "{used}");
    assert!(used["cache_read"].as_u64().unwrap() > 1024, "{used}");
    // What OpenRouter said each request cost is added up too.
    assert!(used["cost_micro_usd"].as_u64().unwrap() > 0, "{used}");
}

/// The model's names of the tools a chat request offered.
fn offered(chat: &Value) -> Vec<String> {
    chat["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(String::from))
        .collect()
}

/// A chat on OpenRouter with its own key leaves `OPENAI_API_KEY` OpenAI's: images and
/// speech use it. When `OPENAI_API_KEY` is the key the chat goes to OpenRouter with, it is
/// not sent to OpenAI (no image tool without a key named for it).
#[test]
fn openai_api_key_stays_openais_when_the_chat_goes_to_openrouter_with_its_own_key() {
    let router = FakeOpenRouter::start(&["openai/gpt-4o"]);
    let (_ws, a) = routed_agent(
        &router,
        "openrouter-images",
        &[
            ("OPENROUTER_API_KEY", "sk-or-v1-test"),
            ("OPENAI_BASE_URL", BASE),
            ("OPENAI_API_KEY", "sk-openai"),
        ],
    );
    a.send(&message("1", "hi", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: hi");
    assert_eq!(
        router.llm.requests()[0].header("authorization"),
        Some("Bearer sk-or-v1-test")
    );
    assert!(offered(&router.chats()[0]).contains(&"image_generate".to_string()));
    drop(a);

    let (_ws, b) = routed_agent(
        &router,
        "openrouter-no-images",
        &[("OPENAI_API_KEY", "sk-or-v1-test"), ("OPENAI_BASE_URL", BASE)],
    );
    b.send(&message("1", "hi", "m-1"));
    assert_eq!(done_text(&b.reply()), "echo: hi");
    let last = router.chats().pop().unwrap();
    assert!(!offered(&last).contains(&"image_generate".to_string()), "{last}");
    assert!(offered(&last).contains(&"bash".to_string()));
}

/// `OPENROUTER_API_KEY` alone sends the agent to OpenRouter; its default model there is
/// `openai/gpt-4o`, and when OpenRouter no longer has it ("not a valid model ID"), the
/// newest general GPT it lists, never another vendor's newer model.
#[test]
fn an_openrouter_key_alone_picks_openrouter_and_its_newest_gpt_when_the_default_is_gone() {
    let router = FakeOpenRouter::start(&[
        "openai/gpt-5.5",
        "openai/gpt-6",
        "openai/gpt-6-mini",
        "x-ai/grok-9",
    ]);
    let (_ws, a) = routed_agent(
        &router,
        "openrouter-key",
        &[("OPENROUTER_API_KEY", "sk-or-v1-only")],
    );
    a.send(&message("1", "hi", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: hi");
    let models: Vec<Value> = router.chats().iter().map(|c| c["model"].clone()).collect();
    assert_eq!(models, [json!("openai/gpt-4o"), json!("openai/gpt-6")]);
    assert_eq!(
        router.llm.requests()[0].header("authorization"),
        Some("Bearer sk-or-v1-only")
    );
    assert!(
        a.proc.log().contains("model openai/gpt-4o is gone"),
        "{}",
        a.proc.log()
    );
}

/// A provider behind the router that takes no cache marks (its refusal wrapped as
/// OpenRouter wraps it): the request is sent again at once without them, the reply
/// arrives, and no later request carries any.
#[test]
fn a_router_whose_provider_refuses_cache_marks_is_asked_again_without_them() {
    let router = FakeOpenRouter::refusing_marks(&["anthropic/claude-sonnet-4.6"], "Amazon Bedrock");
    let (_ws, a) = routed_agent(
        &router,
        "openrouter-unmarked",
        &[
            ("OPENAI_API_KEY", "sk-or-v1-test"),
            ("OPENAI_BASE_URL", BASE),
            ("AEGIS_MODEL", "openai/anthropic/claude-sonnet-4.6"),
        ],
    );
    for (i, text) in ["hello", "and then?", "one more"].iter().enumerate() {
        a.send(&message("1", text, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), format!("echo: {text}"));
    }
    let marked: Vec<bool> = router
        .chats()
        .iter()
        .map(|c| c.to_string().contains("cache_control"))
        .collect();
    assert_eq!(marked, [false, true, false, false]);
    assert!(
        a.proc
            .log()
            .contains("the server refuses prompt cache marks (HTTP 400: Provider returned error (Amazon Bedrock: messages.1.content.0.cache_control: Extra inputs are not permitted))"),
        "{}",
        a.proc.log()
    );
}

/// Gemini through OpenRouter calls a tool: its thought signature (OpenRouter's
/// `reasoning_details`) goes back with the call in the round after and with every later
/// message, as Gemini refuses a tool call without it.
#[test]
fn geminis_thought_signature_through_openrouter_goes_back_with_its_tool_call() {
    let router = FakeOpenRouter::start(&["google/gemini-3-pro-preview"]);
    let (_ws, a) = routed_agent(
        &router,
        "openrouter-gemini",
        &[
            ("OPENROUTER_API_KEY", "sk-or-v1-test"),
            ("AEGIS_MODEL", "google/gemini-3-pro-preview"),
        ],
    );
    a.send(&message("1", "what day is it? run it", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: what day is it? run it");
    a.send(&message("1", "thanks", "m-2"));
    assert_eq!(done_text(&a.reply()), "echo: thanks");
    let chats = router.chats();
    assert_eq!(chats.len(), 3, "none refused");
    let sent_back = &chats[2]["messages"][2];
    assert_eq!(sent_back["tool_calls"][0]["id"], "tool_bash_Xb2k");
    assert_eq!(sent_back["reasoning_details"][1]["type"], "reasoning.encrypted");
    assert_eq!(sent_back["reasoning_details"][0]["text"], "Checking the date.");
}

/// A conversation whose tool calls another model made (no signature kept) continues with
/// Gemini through OpenRouter: refused once, it is asked again with Google's stand-in for
/// an unknown signature in OpenRouter's `reasoning_details`.
#[test]
fn gemini_through_openrouter_takes_over_a_conversation_with_unsigned_tool_calls() {
    let router = FakeOpenRouter::start(&["google/gemini-3-pro-preview"]);
    let ws = temp_dir("openrouter-gemini-older");
    aegis_e2e::agent::write_session_with_tool_calls(ws.path(), "1");
    let reach = router.env();
    let mut env: Vec<(&str, &str)> = reach.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("OPENROUTER_API_KEY", "sk-or-v1-test"),
        ("AEGIS_MODEL", "google/gemini-3-pro-preview"),
    ]);
    let a = start_agent(&ws, &env);
    a.send(&message("1", "and now?", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: and now?");
    let chats = router.chats();
    assert_eq!(chats.len(), 2, "refused once, then taken");
    assert_eq!(
        chats[1]["messages"][2]["reasoning_details"][0]["data"],
        "skip_thought_signature_validator"
    );
    assert!(
        a.proc.log().contains("asking again with stand-ins"),
        "{}",
        a.proc.log()
    );
}

/// OpenRouter as its Claude Code guide sets it up: its Anthropic-compatible API at
/// `ANTHROPIC_BASE_URL=https://openrouter.ai/api`, its key in `ANTHROPIC_AUTH_TOKEN` (and
/// `ANTHROPIC_API_KEY` set empty). The key goes as a bearer token, never as `x-api-key`;
/// models go by OpenRouter's names (Claude's by default, `openai/gpt-5` when named), and
/// Claude's prompt is marked for its cache there as at Anthropic.
#[test]
fn openrouter_set_up_as_for_claude_code_is_reached_through_its_anthropic_api() {
    let router = FakeOpenRouter::start(&["anthropic/claude-sonnet-4.6", "openai/gpt-5"]);
    let claude_code = [
        ("OPENROUTER_API_KEY", "sk-or-v1-cc"),
        ("ANTHROPIC_BASE_URL", "https://openrouter.ai/api"),
        ("ANTHROPIC_AUTH_TOKEN", "sk-or-v1-cc"),
        ("ANTHROPIC_API_KEY", ""),
    ];
    let (ws, a) = routed_agent(&router, "openrouter-anthropic", &claude_code);
    assert!(
        a.proc.log().contains(
            "LLM provider: Anthropic (model anthropic/claude-sonnet-4.6, https://openrouter.ai/api)"
        ),
        "{}",
        a.proc.log()
    );
    for (i, text) in ["hello", "and then?", "one more"].iter().enumerate() {
        a.send(&message("1", text, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), format!("echo: {text}"));
    }
    let requests = router.llm.requests();
    assert!(requests.iter().all(|r| r.path == "/api/v1/messages"));
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-or-v1-cc"));
    assert_eq!(requests[0].header("x-api-key"), None);
    let sent = router.messages();
    assert!(sent.iter().all(|m| m["model"] == "anthropic/claude-sonnet-4.6"));
    assert!(sent[1].to_string().contains("cache_control"), "{}", sent[1]);
    a.proc.wait_for("from the cache", T);
    let used = &usage_today(ws.path())["anthropic/claude-sonnet-4.6"];
    assert!(used["cache_read"].as_u64().unwrap() > 1024, "{used}");
    drop(a);

    // Any model of OpenRouter's, by its name, through the same API.
    let mut gpt = claude_code.to_vec();
    gpt.push(("AEGIS_MODEL", "openai/gpt-5"));
    let (_ws, b) = routed_agent(&router, "openrouter-anthropic-gpt", &gpt);
    b.send(&message("1", "hi", "m-1"));
    assert_eq!(done_text(&b.reply()), "echo: hi");
    assert_eq!(router.messages().pop().unwrap()["model"], "openai/gpt-5");
    drop(b);

    // OpenRouter's key in ANTHROPIC_API_KEY: still sent as the bearer token it takes.
    let (_ws, c) = routed_agent(
        &router,
        "openrouter-anthropic-key",
        &[
            ("ANTHROPIC_BASE_URL", "https://openrouter.ai/api"),
            ("ANTHROPIC_API_KEY", "sk-or-v1-in-key"),
        ],
    );
    c.send(&message("1", "hi", "m-1"));
    assert_eq!(done_text(&c.reply()), "echo: hi");
    let last = router.llm.requests().pop().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer sk-or-v1-in-key"));
    assert_eq!(last.header("x-api-key"), None);
}

/// A thinking budget reaches Claude through OpenRouter as its `reasoning.max_tokens`
/// (where it was dropped as meant for Anthropic alone); `adaptive` as `reasoning.enabled`.
/// OpenRouter takes a budget or an effort, not both: the budget is sent, and the log says so.
#[test]
fn a_thinking_budget_reaches_claude_through_openrouter_as_its_reasoning_setting() {
    let router = FakeOpenRouter::start(&["anthropic/claude-sonnet-4.6"]);
    let asked = |name: &str, thinking: &[(&str, &str)]| {
        let mut env = vec![
            ("OPENROUTER_API_KEY", "sk-or-v1-think"),
            ("AEGIS_MODEL", "anthropic/claude-sonnet-4.6"),
        ];
        env.extend_from_slice(thinking);
        let (_ws, a) = routed_agent(&router, name, &env);
        a.send(&message("1", "think", "m-1"));
        assert_eq!(done_text(&a.reply()), "echo: think");
        (router.chats().pop().unwrap(), a.proc.log())
    };
    let (chat, _) = asked("openrouter-budget", &[("AEGIS_THINKING_BUDGET", "2048")]);
    assert_eq!(chat["reasoning"], json!({"max_tokens": 2048}), "{chat}");
    assert!(chat.get("reasoning_effort").is_none(), "{chat}");
    let (chat, _) = asked("openrouter-adaptive", &[("AEGIS_THINKING_BUDGET", "adaptive")]);
    assert_eq!(chat["reasoning"], json!({"enabled": true}), "{chat}");
    let (chat, log) = asked(
        "openrouter-both",
        &[
            ("AEGIS_THINKING_BUDGET", "4096"),
            ("AEGIS_REASONING_EFFORT", "high"),
        ],
    );
    assert_eq!(chat["reasoning"], json!({"max_tokens": 4096}), "{chat}");
    assert!(chat.get("reasoning_effort").is_none(), "{chat}");
    assert!(
        log.contains("OpenRouter takes a thinking budget or a reasoning effort, not both"),
        "{log}"
    );
    let (chat, _) = asked("openrouter-effort", &[("AEGIS_REASONING_EFFORT", "high")]);
    assert_eq!(chat["reasoning_effort"], "high", "{chat}");
    assert!(chat.get("reasoning").is_none(), "{chat}");
}

/// A stopped reply closes the model's connection at once over TLS too (the socket under
/// the TLS session is shut): the front sees its client go and closes the model's side.
#[test]
fn a_cancel_closes_a_silent_https_model_stream_at_once() {
    use aegis_e2e::llm::{openai_sse, Reply};
    let llm = FakeLlm::scripted(vec![Reply::quiet(), Reply::sse(openai_sse(&["after"]))]);
    let front = TlsFront::start(llm.url());
    let ws = temp_dir("tls-cancel");
    let a = behind_the_test_ca(&ws, &front);
    a.send(&message("1", "think", "m-1"));
    llm.wait_request(1, T);
    a.send(&tether::Frame::new(
        "control.cancel",
        Some(tether::Session::new("telegram", "1")),
    ));
    assert_eq!(done_text(&a.reply()), "⏹ Reply cancelled.");
    let deadline = std::time::Instant::now() + T;
    while llm.abandoned() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(llm.abandoned(), 1, "the model saw its client go");
    a.send(&message("1", "again", "m-2"));
    assert_eq!(done_text(&a.reply()), "after");
}
