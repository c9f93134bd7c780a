//! The real `aegis-agent` binary against a harness stand-in, a direct tether host and
//! local LLM servers speaking the OpenAI and Anthropic streaming formats.

use std::time::{Duration, Instant};

use aegis_e2e::agent::{done_text, kinds, message, start_agent, start_agent_with, texts};
use aegis_e2e::harness::{collect_until_done, post_to_agent, FakeHarness, FakeTetherHost};
use aegis_e2e::llm::{
    anthropic_error_event, anthropic_sse, offered_tools, openai_sse, openai_tool_sse, reasoning_sse,
    unstamped, End, FakeLlm, Reply,
};
use aegis_e2e::proc::{command, temp_dir, Proc};
use serde_json::json;
use tether::frame::{Session, User};
use tether::Frame;

const T: Duration = Duration::from_secs(20);

/// Claude with extended thinking calls a tool: the signed thoughts go back before the
/// call, as Anthropic requires, and never into the session file.
#[test]
fn anthropic_extended_thinking_sends_its_signed_thoughts_back_with_the_tool_call() {
    use aegis_e2e::llm::{anthropic_thinking_refusal, anthropic_thinking_tool_sse, tool_results};
    let llm = FakeLlm::with(|req| {
        let body = req.json();
        if let Some(refusal) = anthropic_thinking_refusal(&body) {
            return refusal;
        }
        if tool_results(req).is_empty() {
            return Reply::sse(anthropic_thinking_tool_sse(
                &["The user wants", " a greeting file."],
                "sig-EqQBCkgIARAB",
                Some("ENCRYPTED-THOUGHTS"),
                &[("toolu_1", "bash", r#"{"command":"echo hi > greeting.txt"}"#)],
            ));
        }
        Reply::sse(anthropic_sse(&["Done."]))
    });
    let ws = temp_dir("anthropic-thinking");
    let a = start_agent(
        &ws,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("ANTHROPIC_BASE_URL", llm.url()),
            ("AEGIS_THINKING_BUDGET", "2048"),
        ],
    );
    a.send(&message("5", "write a greeting file", "m-1"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "Done.");
    assert_eq!(
        texts(&frames, "reasoning.delta").concat(),
        "The user wants a greeting file."
    );
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2, "the tool round was not refused");
    let first = reqs[0].json();
    assert_eq!(
        first["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(
        first["max_tokens"],
        2048 + 4096,
        "the answer keeps its 4096 on top"
    );
    let second = reqs[1].json();
    let call = &second["messages"][1];
    assert_eq!(
        call["content"][0],
        json!({"type": "thinking", "thinking": "The user wants a greeting file.", "signature": "sig-EqQBCkgIARAB"})
    );
    assert_eq!(
        call["content"][1],
        json!({"type": "redacted_thinking", "data": "ENCRYPTED-THOUGHTS"})
    );
    assert_eq!(call["content"][2]["type"], "tool_use");
    let session = std::fs::read_to_string(ws.join("sessions/telegram_5.jsonl")).unwrap();
    assert!(session.contains("toolu_1"), "{session}");
    assert!(
        !session.contains("sig-EqQBCkgIARAB")
            && !session.contains("ENCRYPTED")
            && !session.contains("greeting file."),
        "{session}"
    );
}

/// The newest Claude models take only adaptive thinking: a configured budget is refused
/// with Anthropic's 400, asked again at once with adaptive thinking, and not tried again.
/// The effort setting goes as `output_config.effort`.
#[test]
fn a_claude_model_that_takes_only_adaptive_thinking_is_asked_again_and_that_is_kept() {
    use aegis_e2e::llm::anthropic_budget_refusal;
    let llm = FakeLlm::with(|req| {
        anthropic_budget_refusal(&req.json()).unwrap_or_else(|| Reply::sse(anthropic_sse(&["ok"])))
    });
    let ws = temp_dir("adaptive-thinking");
    let a = start_agent(
        &ws,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("ANTHROPIC_BASE_URL", llm.url()),
            ("AEGIS_MODEL", "claude-opus-5"),
            ("AEGIS_THINKING_BUDGET", "4096"),
            ("AEGIS_REASONING_EFFORT", "medium"),
        ],
    );
    a.send(&message("1", "first", "m-1"));
    assert_eq!(done_text(&a.reply()), "ok");
    a.send(&message("1", "second", "m-2"));
    assert_eq!(done_text(&a.reply()), "ok");
    let bodies: Vec<serde_json::Value> = llm.requests().iter().map(|r| r.json()).collect();
    let thinking: Vec<&str> = bodies
        .iter()
        .map(|b| b["thinking"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(thinking, ["enabled", "adaptive", "adaptive"]);
    assert!(
        bodies
            .iter()
            .all(|b| b["output_config"] == json!({"effort": "medium"})),
        "{bodies:?}"
    );
    assert!(a.proc.log().contains("takes only adaptive thinking"));
}

/// Providers retire models. When the agent's default is gone (Anthropic's 404
/// `not_found_error`), it asks the server which models the key can use, takes the newest
/// of the same family and keeps to it; a model the user named is never replaced, and its
/// 404 tells them what to set.
#[test]
fn a_retired_default_model_gives_way_to_the_newest_of_its_family_and_a_named_one_does_not() {
    let current = ["claude-opus-5", "claude-sonnet-5", "claude-haiku-4-5"];
    let llm = FakeLlm::with(move |req| {
        if req.method == "GET" {
            // Anthropic's list, newest first.
            let data: Vec<_> = current
                .iter()
                .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2026-10-01T00:00:00Z"}))
                .collect();
            return Reply::Status {
                code: 200,
                headers: vec![],
                body: json!({"data": data, "has_more": false, "first_id": current[0], "last_id": current[2]})
                    .to_string(),
            };
        }
        let model = req.json()["model"].as_str().unwrap_or_default().to_string();
        if !current.contains(&model.as_str()) {
            return Reply::anthropic_model_not_found(&model);
        }
        Reply::sse(anthropic_sse(&[&format!("I am {model}.")]))
    });
    let ws = temp_dir("retired-default");
    let env = [
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("ANTHROPIC_BASE_URL", llm.url()),
    ];
    let a = start_agent(&ws, &env);
    a.send(&message("1", "who are you?", "m-1"));
    assert_eq!(done_text(&a.reply()), "I am claude-sonnet-5.");
    a.send(&message("1", "and now?", "m-2"));
    assert_eq!(done_text(&a.reply()), "I am claude-sonnet-5.");
    let reqs = llm.requests();
    let asked: Vec<(String, String)> = reqs
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.json()["model"].as_str().unwrap_or(&r.path).to_string(),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            ("POST".to_string(), "claude-sonnet-4-6".to_string()),
            ("GET".to_string(), "/v1/models?limit=100".to_string()),
            ("POST".to_string(), "claude-sonnet-5".to_string()),
            ("POST".to_string(), "claude-sonnet-5".to_string()),
        ]
    );
    assert_eq!(reqs[1].header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(reqs[1].header("anthropic-version"), Some("2023-06-01"));
    assert!(
        a.proc.log().contains("model claude-sonnet-4-6 is gone"),
        "{}",
        a.proc.log()
    );
    assert!(!a.proc.log().contains("sk-ant-test"));
    drop(a);

    let ws = temp_dir("retired-named");
    let mut env = env.to_vec();
    env.push(("AEGIS_MODEL", "claude-3-7-sonnet-20250219"));
    let b = start_agent(&ws, &env);
    b.send(&message("1", "hello", "m-1"));
    let said = done_text(&b.reply());
    assert!(
        said.contains("has no such model (HTTP 404: model: claude-3-7-sonnet-20250219)")
            && said.contains("set AEGIS_MODEL"),
        "{said}"
    );
    assert_eq!(llm.requests().len(), 5, "the named model was not replaced");
}

/// What `a` answers to `text` in chat `chat` (message `id`).
fn ask(a: &aegis_e2e::agent::Agent, chat: &str, text: &str, id: &str) -> String {
    a.answer(&message(chat, text, id))
}

/// [ours] `/model`: a chat sees the model it talks to and the ones the server lists for
/// the key (chat models only: not OpenAI's image or speech models), and picks one for
/// itself alone; a name the server does not list is refused with close ones. The choice
/// holds across a restart, `/model default` goes back, and none of it reaches the
/// conversation or the model. A chosen model the server no longer has is not replaced:
/// the user is told, with `/model` in the hint. `/stop` ends a wait for the list.
#[test]
fn a_chat_picks_its_own_model_among_those_the_server_lists() {
    use std::sync::mpsc;
    let (release, held) = mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    let hold_lists = std::sync::atomic::AtomicBool::new(false);
    let hold_lists = std::sync::Arc::new(hold_lists);
    let holding = std::sync::Arc::clone(&hold_lists);
    let llm = FakeLlm::with(move |req| {
        if req.method == "GET" {
            if holding.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(20));
            }
            let data: Vec<_> = [
                ("gpt-5.5", 30),
                ("dall-e-3", 5),
                ("gpt-5.5-mini", 30),
                ("whisper-1", 5),
                ("o3", 20),
            ]
            .iter()
            .map(|(id, created)| json!({"id": id, "object": "model", "created": created, "owned_by": "openai"}))
            .collect();
            return Reply::Status {
                code: 200,
                headers: vec![],
                body: json!({"object": "list", "data": data}).to_string(),
            };
        }
        let model = req.json()["model"].as_str().unwrap_or_default().to_string();
        if model == "o3" {
            return Reply::openai_model_not_found(&model);
        }
        let said = openai_sse(&[&format!("I am {model}.")]);
        Reply::sse(aegis_e2e::llm::with_openai_usage(said, 100, 0, 5))
    });
    let ws = temp_dir("chat-model");
    let env = openai_at(llm.url(), "gpt-5.5");
    let a = start_agent(&ws, &env);
    assert_eq!(
        ask(&a, "1", "/model", "m1"),
        format!(
            "This chat talks to gpt-5.5 (OpenAI at 127.0.0.1), the agent's model.\n\n\
             `/model NAME` switches this chat to another: gpt-5.5, gpt-5.5-mini, o3."
        )
    );
    assert_eq!(
        ask(&a, "1", "/model gpt-5.5-mnii", "m2"),
        "OpenAI at 127.0.0.1 lists no model “gpt-5.5-mnii”. Close: gpt-5.5, gpt-5.5-mini."
    );
    assert_eq!(
        ask(&a, "1", "/model@my_bot gpt-5.5-mini", "m3"),
        "This chat talks to gpt-5.5-mini from now on. `/model default` goes back to gpt-5.5."
    );
    assert_eq!(ask(&a, "1", "who are you?", "m4"), "I am gpt-5.5-mini.");
    assert_eq!(
        ask(&a, "2", "who are you?", "m1"),
        "I am gpt-5.5.",
        "another chat keeps the agent's"
    );
    let usage = aegis_e2e::agent::usage_today(&ws);
    assert!(
        usage.get("gpt-5.5-mini").is_some() && usage.get("gpt-5.5").is_some(),
        "{usage}"
    );
    drop(a);

    let a = start_agent(&ws, &env);
    assert_eq!(
        ask(&a, "1", "still you?", "m5"),
        "I am gpt-5.5-mini.",
        "kept across a restart"
    );
    assert!(ask(&a, "1", "/model", "m6").starts_with(
        "This chat talks to gpt-5.5-mini (OpenAI at 127.0.0.1), chosen here; the agent's model is gpt-5.5 \
         (`/model default` goes back to it)."
    ));
    assert_eq!(
        ask(&a, "1", "/model default", "m7"),
        "This chat talks to the agent's model again: gpt-5.5."
    );
    assert_eq!(ask(&a, "1", "and now?", "m8"), "I am gpt-5.5.");

    // A model that is gone is not replaced: the user is told how to choose another.
    assert!(ask(&a, "1", "/model o3", "m9").starts_with("This chat talks to o3 from now on."));
    let gone = ask(&a, "1", "hello", "m10");
    assert!(
        gone.contains("has no such model") && gone.contains("/model"),
        "{gone}"
    );
    let posts: Vec<String> = llm
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json()["model"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        posts,
        ["gpt-5.5-mini", "gpt-5.5", "gpt-5.5-mini", "gpt-5.5", "o3"],
        "no model asked for /model, o3 asked once and not replaced"
    );

    // `/stop` while the server takes its time to list its models.
    hold_lists.store(true, std::sync::atomic::Ordering::SeqCst);
    let lists = || llm.requests().iter().filter(|r| r.method == "GET").count();
    let gets = lists();
    a.send(&message("1", "/model", "m11"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while lists() == gets {
        assert!(Instant::now() < deadline, "the list was not asked");
        std::thread::sleep(Duration::from_millis(10));
    }
    a.send(
        &Frame::new(
            tether::frame::kind::CONTROL_CANCEL,
            Some(Session::new("telegram", "1")),
        )
        .with_payload(&tether::frame::Cancel {
            msg_id: Some("m11".into()),
        }),
    );
    assert_eq!(done_text(&a.reply()), "⏹ Reply cancelled.");
    let _ = release.send(());

    let session = std::fs::read_to_string(ws.join("sessions/telegram_1.jsonl")).unwrap();
    assert!(!session.contains("/model"), "{session}");
    let chosen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.join(".aegis/chat-models.json")).unwrap()).unwrap();
    assert_eq!(chosen, json!({"telegram/1": "o3"}));
    drop(a);

    // The operator bounds what chats may pick (`AEGIS_MODELS`): the server is not asked,
    // a choice made before and no longer allowed gives way to the agent's model.
    let gets = lists();
    let mut bounded = env.to_vec();
    bounded.push(("AEGIS_MODELS", "gpt-5.5-mini"));
    let a = start_agent(&ws, &bounded);
    assert_eq!(ask(&a, "1", "who now?", "b1"), "I am gpt-5.5.");
    assert_eq!(
        ask(&a, "1", "/model", "b2"),
        "This chat talks to gpt-5.5 (OpenAI at 127.0.0.1), the agent's model.\n\n\
         `/model NAME` switches this chat to another its operator allows: gpt-5.5-mini.",
        "o3, chosen before, is no longer allowed"
    );
    assert_eq!(
        ask(&a, "1", "/model o3", "b3"),
        "`/model NAME` switches this chat to another its operator allows: gpt-5.5-mini."
    );
    assert!(
        ask(&a, "1", "/model gpt-5.5-mini", "b4").starts_with("This chat talks to gpt-5.5-mini from now on.")
    );
    assert_eq!(ask(&a, "1", "who now?", "b5"), "I am gpt-5.5-mini.");
    assert_eq!(lists(), gets, "the operator's list needs no server's");
    drop(a);
    let mut none = env.to_vec();
    none.push(("AEGIS_MODELS", "none"));
    let a = start_agent(&ws, &none);
    assert_eq!(ask(&a, "1", "who now?", "c1"), "I am gpt-5.5.");
    assert_eq!(
        ask(&a, "1", "/model gpt-5.5-mini", "c2"),
        "Every chat talks to the agent's model here (its operator set `models` to none)."
    );
}

/// An Anthropic-compatible gateway (LiteLLM, a company's proxy) takes its own token as a
/// bearer (`ANTHROPIC_AUTH_TOKEN`, as Claude Code and Anthropic's SDKs send it). The token
/// comes first, and Anthropic's own key, set as well, never reaches the gateway: neither
/// with the messages nor when the default model is gone and the models are listed.
#[test]
fn a_gateways_token_goes_as_a_bearer_and_anthropics_own_key_is_not_sent_to_it() {
    let llm = FakeLlm::with(|req| {
        if req.header("authorization") != Some("Bearer gw-token") {
            return Reply::unauthorized();
        }
        if req.method == "GET" {
            let data = json!([{"type": "model", "id": "claude-sonnet-5", "display_name": "Claude Sonnet 5",
                "created_at": "2026-10-01T00:00:00Z"}]);
            return Reply::Status {
                code: 200,
                headers: vec![],
                body: json!({"data": data, "has_more": false}).to_string(),
            };
        }
        let model = req.json()["model"].as_str().unwrap_or_default().to_string();
        if model != "claude-sonnet-5" {
            return Reply::anthropic_model_not_found(&model);
        }
        Reply::sse(anthropic_sse(&[&format!("I am {model}.")]))
    });
    let ws = temp_dir("gateway-token");
    let a = start_agent(
        &ws,
        &[
            ("ANTHROPIC_AUTH_TOKEN", "gw-token"),
            ("ANTHROPIC_API_KEY", "sk-ant-home"),
            ("ANTHROPIC_BASE_URL", llm.url()),
        ],
    );
    a.send(&message("1", "who are you?", "m-1"));
    assert_eq!(done_text(&a.reply()), "I am claude-sonnet-5.");
    let reqs = llm.requests();
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        ["POST", "GET", "POST"],
        "the default gone, the list, the newest"
    );
    assert!(reqs.iter().all(|r| r.header("x-api-key").is_none()));
    assert!(!a.proc.log().contains("gw-token"), "the token was logged");
}

/// OpenAI's reasoning models (o-series, GPT-5) refuse `max_tokens`, here as Azure or a
/// proxy serves them: the agent asks again with `max_completion_tokens`, and keeps to it.
#[test]
fn a_reasoning_model_that_refuses_max_tokens_is_asked_again_with_max_completion_tokens() {
    let llm = FakeLlm::with(|req| {
        let body = req.json();
        if body.get("max_tokens").is_some() {
            return Reply::Status {
                code: 400,
                headers: vec![],
                body: json!({"error": {
                    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                    "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}})
                .to_string(),
            };
        }
        Reply::sse(openai_sse(&["ok"]))
    });
    let ws = temp_dir("completion-tokens");
    let a = start_agent(
        &ws,
        &[
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_BASE_URL", llm.url()),
            ("AEGIS_MAX_TOKENS", "1000"),
            ("AEGIS_REASONING_EFFORT", "low"),
        ],
    );
    a.send(&message("1", "first", "m-1"));
    assert_eq!(done_text(&a.reply()), "ok");
    a.send(&message("1", "second", "m-2"));
    assert_eq!(done_text(&a.reply()), "ok");
    let limits: Vec<(bool, Option<u64>)> = llm
        .requests()
        .iter()
        .map(|r| {
            let b = r.json();
            (b.get("max_tokens").is_some(), b["max_completion_tokens"].as_u64())
        })
        .collect();
    assert_eq!(limits, [(true, None), (false, Some(1000)), (false, Some(1000))]);
    assert!(llm
        .requests()
        .iter()
        .all(|r| r.json()["reasoning_effort"] == "low"));
}

#[test]
fn harness_mode_streams_an_openai_reply_in_protocol_order() {
    let llm = FakeLlm::scripted(vec![Reply::sse(openai_sse(&["Hel", "lo!"]))]);
    let ws = temp_dir("openai");
    let a = start_agent(
        &ws,
        &[("OPENAI_API_KEY", "sk-test-123"), ("OPENAI_BASE_URL", llm.url())],
    );
    assert!(a.proc.log().contains("aegis-agent starting"));
    assert!(a.proc.log().contains("LLM provider: OpenAI"));
    let mut f = message("42", "Hello!", "m-1");
    f = f.with_payload(&tether::frame::UserMessage {
        text: "Hello!".into(),
        user: Some(User {
            id: Some("7".into()),
            username: Some("johndoe".into()),
            name: Some("John".into()),
        }),
        ..Default::default()
    });
    a.send(&f);
    let frames = a.reply();
    assert_eq!(
        kinds(&frames),
        vec![
            "event.ack",
            "status.presence",
            // Once after a start: the agent's own commands (none here).
            "status.commands",
            "assistant.delta",
            "assistant.delta",
            "assistant.done"
        ]
    );
    assert_eq!(
        frames[0]
            .payload_as::<tether::frame::Ack>()
            .unwrap()
            .msg_id
            .as_deref(),
        Some("m-1")
    );
    assert_eq!(texts(&frames, "assistant.delta"), vec!["Hel", "lo!"]);
    assert_eq!(done_text(&frames), "Hello!");
    assert!(frames
        .iter()
        .all(|f| f.session == Some(Session::new("telegram", "42"))));
    let req = &llm.requests()[0];
    assert_eq!(req.path, "/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-123"));
    let body = req.json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "gpt-4o");
    // Tools are on by default: the prompt says so, and every built-in is offered.
    let system = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("You are a helpful assistant. You work in the folder"),
        "{system}"
    );
    assert!(system.contains("run shell commands"), "{system}");
    assert!(system.contains("saved under inbox/"), "{system}");
    assert_eq!(
        offered_tools(req),
        vec![
            "bash",
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
            "glob",
            "grep",
            "web_fetch",
            "respond_with_image",
            "send_file",
            "memory_store",
            "memory_search",
            "memory_delete",
            "cron_create",
            "cron_list",
            "cron_delete",
            "cron_enable",
            "cron_disable",
            "self_info",
            "self_restart"
        ]
    );
    assert_eq!(body["messages"][1]["role"], "user");
    let said = body["messages"][1]["content"].as_str().unwrap();
    assert_eq!(unstamped(said), "[John]: Hello!");
    // The history file holds both turns, one line each; the model is told when the user
    // wrote, to the minute, in UTC, and the file keeps the words as they came.
    let hist = std::fs::read_to_string(ws.join("sessions/telegram_42.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = hist.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["role"], "user");
    assert_eq!(lines[0]["content"], "[John]: Hello!");
    let ts = lines[0]["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z'), "{ts}");
    let minute = format!("{} {} UTC] ", &ts[..10], &ts[11..16]);
    assert_eq!(&said[5..5 + minute.len()], minute, "{said}");
    assert_eq!(lines[1]["content"], "Hello!");
    assert!(!a.proc.log().contains("sk-test-123"), "the key was logged");
}

#[test]
fn anthropic_stream_with_ping_after_a_529_and_a_429() {
    let llm = FakeLlm::scripted(vec![
        Reply::overloaded(),
        Reply::rate_limited(0),
        Reply::sse(anthropic_sse(&["Bonjour", " !"])),
    ]);
    let ws = temp_dir("anthropic");
    let a = start_agent(
        &ws,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-xyz"),
            ("ANTHROPIC_BASE_URL", llm.url()),
            ("OPENAI_API_KEY", "ignored"),
            ("AEGIS_SYSTEM_PROMPT", "Be brief."),
        ],
    );
    assert!(a.proc.log().contains("LLM provider: Anthropic"));
    a.send(&message("1", "Salut", "m-1"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "Bonjour !");
    assert!(!kinds(&frames).contains(&"error".to_string()));
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 3, "two retries before the first token");
    let r = &reqs[2];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some("sk-ant-xyz"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    let body = r.json();
    // A first message: nothing is marked for Claude's prompt cache (see prompt_cache.rs).
    assert_eq!(body["system"], json!([{"type": "text", "text": "Be brief."}]));
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(
        unstamped(body["messages"][0]["content"].as_str().unwrap()),
        "Salut"
    );
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

#[test]
fn anthropic_overloaded_error_event_before_the_first_token_is_retried() {
    let mut first = anthropic_sse(&[]);
    first.truncate(3);
    first.push(anthropic_error_event("overloaded_error", "Overloaded"));
    let llm = FakeLlm::scripted(vec![Reply::sse(first), Reply::sse(anthropic_sse(&["ok"]))]);
    let ws = temp_dir("anth-err");
    let a = start_agent(
        &ws,
        &[("ANTHROPIC_API_KEY", "k"), ("ANTHROPIC_BASE_URL", llm.url())],
    );
    a.send(&message("1", "hi", "m"));
    assert_eq!(done_text(&a.reply()), "ok");
    assert_eq!(llm.requests().len(), 2);
}

/// The first two deltas of "The answer is 4", then a cut in the middle of an event.
fn cut_reply() -> Reply {
    let mut pieces = openai_sse(&["The answer ", "is"]);
    pieces.truncate(3);
    pieces.push("data: {\"choices\":[{\"delta\":{\"content\":\" 4".into()); // cut mid-event
    Reply::Sse {
        pieces,
        delay: Duration::ZERO,
        end: End::Cut,
    }
}

#[test]
fn a_cut_stream_is_retried_and_the_reply_visibly_starts_over() {
    let llm = FakeLlm::scripted(vec![
        cut_reply(),
        Reply::sse(openai_sse(&["The answer ", "is 4"])),
    ]);
    let ws = temp_dir("cut-retry");
    let a = start_agent(&ws, &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())]);
    a.send(&message("1", "2+2?", "m"));
    let frames = a.reply();
    assert_eq!(
        kinds(&frames),
        vec![
            "event.ack",
            "status.presence",
            // Once after a start: the agent's own commands (none here).
            "status.commands",
            "assistant.delta",
            "assistant.delta",
            "status.presence",
            "assistant.delta",
            "assistant.delta",
            "assistant.done"
        ]
    );
    let restart: tether::frame::Presence = frames[5].payload_as().unwrap();
    assert_eq!(restart.restart, Some(true));
    assert_eq!(restart.text.as_deref(), Some(""));
    assert_eq!(done_text(&frames), "The answer is 4");
    assert!(frames.iter().all(|f| f.kind != "error"));
    assert_eq!(llm.requests().len(), 2);
    let hist = std::fs::read_to_string(ws.join("sessions/telegram_1.jsonl")).unwrap();
    assert_eq!(hist.matches("\"role\":\"assistant\"").count(), 1, "{hist}");
    assert!(hist.contains("\"content\":\"The answer is 4\""), "{hist}");
}

#[test]
fn a_stream_cut_on_every_attempt_keeps_the_partial_reply_and_says_so() {
    let llm = FakeLlm::scripted(vec![cut_reply()]);
    let ws = temp_dir("cut");
    let a = start_agent(
        &ws,
        &[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", llm.url()),
            ("AEGIS_LLM_RETRIES", "2"),
        ],
    );
    a.send(&message("1", "2+2?", "m"));
    let frames = a.reply();
    let err = frames.iter().find(|f| f.kind == "error").expect("error frame");
    assert_eq!(
        err.payload_as::<tether::frame::ErrorPayload>().unwrap().code,
        "llm_interrupted"
    );
    let done = done_text(&frames);
    assert!(
        done.starts_with("The answer is\n\n⚠️ The reply was interrupted"),
        "{done}"
    );
    assert_eq!(
        llm.requests().len(),
        2,
        "retried within the budget, then given up"
    );
    let hist = std::fs::read_to_string(ws.join("sessions/telegram_1.jsonl")).unwrap();
    assert!(hist.contains("\"content\":\"The answer is\""), "{hist}");
}

#[test]
fn malformed_chunk_ends_the_reply_with_a_clear_message() {
    let mut pieces = openai_sse(&["Hi"]);
    pieces.insert(2, "data: {not json}\n\n".into());
    let llm = FakeLlm::scripted(vec![Reply::sse(pieces)]);
    let ws = temp_dir("malformed");
    let a = start_agent(&ws, &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())]);
    a.send(&message("1", "hi", "m"));
    let done = done_text(&a.reply());
    assert!(
        done.starts_with("Hi\n\n⚠️ The reply was interrupted (malformed chunk"),
        "{done}"
    );
}

#[test]
fn persistent_server_errors_end_with_an_unavailable_message() {
    let llm = FakeLlm::scripted(vec![Reply::server_error()]);
    let ws = temp_dir("500");
    let a = start_agent(
        &ws,
        &[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", llm.url()),
            ("AEGIS_LLM_RETRIES", "2"),
        ],
    );
    a.send(&message("1", "hi", "m"));
    let frames = a.reply();
    let done = done_text(&frames);
    assert!(
        done.contains("The LLM provider is unavailable (HTTP 500"),
        "{done}"
    );
    assert_eq!(llm.requests().len(), 2);
    // A bad key is not retried and says what is wrong.
    let llm = FakeLlm::scripted(vec![Reply::unauthorized()]);
    let ws_401 = temp_dir("401");
    let b = start_agent(
        &ws_401,
        &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())],
    );
    b.send(&message("1", "hi", "m"));
    let done = done_text(&b.reply());
    assert!(
        done.contains("rejected the API key (HTTP 401: Incorrect API key provided)"),
        "{done}"
    );
    assert_eq!(llm.requests().len(), 1);
}

#[test]
fn no_key_reply_names_the_variables() {
    let ws = temp_dir("nokey");
    let a = start_agent(&ws, &[]);
    a.send(&message("1", "hi", "m"));
    let done = done_text(&a.reply());
    assert!(
        done.contains("ANTHROPIC_API_KEY") && done.contains("OPENAI_API_KEY"),
        "{done}"
    );
}

#[test]
fn cancel_stops_the_stream_and_keeps_the_partial_reply_marked_cancelled() {
    let llm = FakeLlm::scripted(vec![
        Reply::stalls_after("partial"),
        Reply::sse(openai_sse(&["next"])),
    ]);
    let ws = temp_dir("cancel");
    let a = start_agent(&ws, &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())]);
    a.send(&message("9", "long story please", "m-1"));
    // Wait for the first delta, then cancel.
    loop {
        let f = a.harness.frames().recv_timeout(T).expect("delta");
        if f.kind == "assistant.delta" {
            break;
        }
    }
    let cancel = Frame::new("control.cancel", Some(Session::new("telegram", "9")));
    let sent = Instant::now();
    a.send(&cancel);
    let frames = a.reply();
    println!("cancel to done: {:?}", sent.elapsed());
    let err = frames.iter().find(|f| f.kind == "error").unwrap();
    assert_eq!(
        err.payload_as::<tether::frame::ErrorPayload>().unwrap().code,
        "cancelled"
    );
    assert_eq!(done_text(&frames), "partial\n\n⏹ Reply cancelled.");
    // The next message is answered normally and sees the cancelled turn in its context.
    a.send(&message("9", "go on", "m-2"));
    assert_eq!(done_text(&a.reply()), "next");
    let hist = std::fs::read_to_string(ws.join("sessions/telegram_9.jsonl")).unwrap();
    let turns: Vec<serde_json::Value> = hist.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(turns[1]["content"], "partial");
    assert_eq!(turns[1]["cancelled"], true);
    let msgs = &llm.requests()[1].json()["messages"];
    assert_eq!(msgs[2]["content"], "partial");
}

#[test]
fn cancel_closes_the_model_connection_at_once_even_while_the_model_is_silent() {
    // A reasoning model sends nothing while it thinks: the reader learns of the cancel
    // only from the connection being closed under it, and the server, which would go on
    // generating (and billing) for minutes, only from that close.
    let llm = FakeLlm::scripted(vec![Reply::quiet(), Reply::sse(openai_sse(&["next"]))]);
    let ws = temp_dir("cancel-quiet");
    let a = start_agent(&ws, &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())]);
    a.send(&message("9", "think hard", "m-1"));
    llm.wait_request(1, T);
    a.send(&Frame::new("control.cancel", Some(Session::new("telegram", "9"))));
    assert_eq!(done_text(&a.reply()), "⏹ Reply cancelled.");
    let deadline = Instant::now() + T;
    while llm.abandoned() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        llm.abandoned(),
        1,
        "the server saw its client go while it was silent"
    );
    // The next request goes out on a connection of its own and is answered.
    a.send(&message("9", "go on", "m-2"));
    assert_eq!(done_text(&a.reply()), "next");
}

#[test]
fn history_survives_a_restart_and_feeds_the_context() {
    let llm = FakeLlm::echo_openai();
    let ws = temp_dir("restart");
    // Without tools the system prompt is the plain default.
    let env = [
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", llm.url()),
        ("AEGIS_TOOLS", "none"),
    ];
    let mut a = start_agent(&ws, &env);
    a.send(&message("5", "first", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: first");
    a.proc.kill9();
    let b = start_agent(&ws, &env);
    b.send(&message("5", "second", "m-2"));
    assert_eq!(done_text(&b.reply()), "echo: second");
    let msgs = llm.requests()[1].json()["messages"].clone();
    let contents: Vec<&str> = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| unstamped(m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(contents[1..], ["first", "echo: first", "second"]);
    assert!(contents[0].starts_with("You are a helpful assistant. Each user message begins with the time"));
    let _ = a.workspace;
}

/// The system prompt of request `r` (OpenAI's first message, or Anthropic's `system`
/// blocks).
fn system_of(r: &aegis_e2e::http::Request) -> String {
    let j = r.json();
    match j["system"].as_array() {
        Some(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        None => j["messages"][0]["content"].as_str().unwrap_or("").to_string(),
    }
}

fn is_recap_request(r: &aegis_e2e::http::Request) -> bool {
    system_of(r).starts_with("You keep the memory of a long chat")
}

/// A model that echoes, and recaps by listing the user lines it was given; it speaks
/// Anthropic's stream when asked at `/v1/messages`.
fn recapping_llm() -> FakeLlm {
    FakeLlm::with(|req| {
        let text = aegis_e2e::llm::last_user_text(req);
        let reply = if is_recap_request(req) {
            let said: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split_once("] user: ").map(|(_, s)| s))
                .collect();
            format!("RECAP[{}]", said.join(" / "))
        } else {
            format!("echo: {text}")
        };
        if req.path.ends_with("/messages") {
            Reply::sse(anthropic_sse(&[&reply]))
        } else {
            Reply::sse(openai_sse(&[&reply]))
        }
    })
}

fn wait_for_file(path: &std::path::Path, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if what(&text) {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "{} never came right", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What falls out of the context window is recapped by the model, once a quarter of a
/// window's worth has, and the recap rides in the system prompt from then on, across a
/// restart; the next recap folds the old one in and covers only what came after it.
#[test]
fn a_long_conversation_keeps_a_recap_of_what_fell_out_of_the_window() {
    let llm = recapping_llm();
    let ws = temp_dir("recap");
    let env = [
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", llm.url()),
        ("AEGIS_TOOLS", "none"),
        ("AEGIS_CONTEXT_TURNS", "4"),
    ];
    let recap_file = ws.path().join("sessions/telegram_5.recap.json");
    let mut a = start_agent(&ws, &env);
    for (i, text) in ["my code word is walnut", "second", "third"].iter().enumerate() {
        a.send(&message("5", text, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), format!("echo: {text}"));
    }
    // Three exchanges in a window of four turns: the first fell out, and is recapped.
    let recap = wait_for_file(&recap_file, |t| t.contains("RECAP["));
    assert!(recap.contains("RECAP[my code word is walnut]"), "{recap}");
    let asked: Vec<_> = llm.requests().into_iter().filter(is_recap_request).collect();
    assert_eq!(asked.len(), 1);
    assert!(
        !aegis_e2e::llm::last_user_text(&asked[0]).contains("second"),
        "only what fell out"
    );
    assert_eq!(
        asked[0].json()["tools"],
        serde_json::Value::Null,
        "no tools for a recap"
    );

    a.proc.kill9();
    let b = start_agent(&ws, &env);
    b.send(&message("5", "what is my code word?", "m-3"));
    assert_eq!(done_text(&b.reply()), "echo: what is my code word?");
    let replies: Vec<_> = llm
        .requests()
        .into_iter()
        .filter(|r| !is_recap_request(r))
        .collect();
    let system = system_of(replies.last().unwrap());
    assert!(system.contains("began before the messages you see"), "{system}");
    assert!(system.contains("RECAP[my code word is walnut]"), "{system}");
    assert!(
        !system_of(&replies[2]).contains("RECAP"),
        "no recap before one was written"
    );

    // The window moved on by one exchange: the next recap covers it, given the old one.
    let recap = wait_for_file(&recap_file, |t| t.contains("RECAP[second]"));
    let asked: Vec<_> = llm.requests().into_iter().filter(is_recap_request).collect();
    assert_eq!(asked.len(), 2, "{recap}");
    let second = aegis_e2e::llm::last_user_text(&asked[1]);
    assert!(
        second.starts_with("Recap so far:\nRECAP[my code word is walnut]\n"),
        "{second}"
    );
    assert!(
        !second.contains("walnut\n[") && !second.contains("user: my code word"),
        "{second}"
    );
    let _ = (a.workspace, b.workspace);
}

/// Claude gets the recap request in its own shape: the instructions as `system`, one
/// user message, no tools; and the recap in the `system` of later requests.
#[test]
fn claude_writes_and_reads_recaps_too() {
    let llm = recapping_llm();
    let ws = temp_dir("recap-claude");
    let env = [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_BASE_URL", llm.url()),
        ("AEGIS_CONTEXT_TURNS", "2"),
    ];
    let a = start_agent(&ws, &env);
    for (i, text) in ["call me Bo", "and you?"].iter().enumerate() {
        a.send(&message("5", text, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), format!("echo: {text}"));
    }
    wait_for_file(&ws.path().join("sessions/telegram_5.recap.json"), |t| {
        t.contains("RECAP[call me Bo]")
    });
    let recap_request = llm.requests().into_iter().find(is_recap_request).unwrap();
    let body = recap_request.json();
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["tools"], serde_json::Value::Null);
    assert!(
        !body.to_string().contains("cache_control"),
        "nothing of a recap request is asked again: no cache mark"
    );
    a.send(&message("5", "who am I?", "m-2"));
    assert_eq!(done_text(&a.reply()), "echo: who am I?");
    let last = llm
        .requests()
        .into_iter()
        .rfind(|r| !is_recap_request(r))
        .unwrap();
    assert!(
        system_of(&last).contains("RECAP[call me Bo]"),
        "{}",
        system_of(&last)
    );
}

/// Replayed through a cache that works as Anthropic documents it, a chat that outgrows
/// its window still has most of each request served from the cache: the system prompt
/// stays the same whatever memories a message brings, the window does not slide with
/// every message, and the marks sit where the next request repeats the prefix.
#[test]
fn claude_reads_most_of_a_long_chat_from_its_prompt_cache() {
    let llm = recapping_llm();
    let ws = temp_dir("prompt-cache");
    std::fs::create_dir_all(ws.path().join(".aegis/memory")).unwrap();
    let memories: String = ["tea", "Lyon", "chess", "piano"]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "{}\n",
                json!({"id": format!("m-{i}"), "scope": "workspace", "text": format!("The user likes {w}"), "tags": [], "ts": "2026-12-01T10:00:00Z"})
            )
        })
        .collect();
    std::fs::write(ws.path().join(".aegis/memory/memories.jsonl"), memories).unwrap();
    let env = [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_BASE_URL", llm.url()),
        ("AEGIS_CONTEXT_RECAP", "0"),
    ];
    let a = start_agent(&ws, &env);
    let topics = ["tea", "Lyon", "chess", "piano", "the weather"];
    // 60 exchanges: the default window (50 turns) is full after 25.
    for i in 0..60 {
        let text = format!("message {i}: what about {}?", topics[i % topics.len()]);
        a.send(&message("5", &text, &format!("m-{i}")));
        a.reply();
    }
    let mut cache = aegis_e2e::prompt_cache::Anthropic::default();
    let reads: Vec<usize> = llm.requests().iter().map(|r| cache.request(&r.json())).collect();
    // The first message marks nothing (no conversation going on yet); from the third on,
    // every request reads at least the tools and the system prompt the second marked.
    assert_eq!(reads[..2], [0, 0]);
    let system_and_tools = *reads[2..].iter().min().unwrap();
    assert!(system_and_tools > 4096, "{reads:?}");
    // Most read the conversation too, also once the window is full.
    let more = |r: &[usize]| r.iter().filter(|&&r| r > system_and_tools).count();
    assert!(more(&reads) * 4 > reads.len() * 3, "{reads:?}");
    assert!(more(&reads[30..]) * 3 > 30 * 2, "{reads:?}");
    let _ = a.workspace;
}

/// A chat answered now and then (here 20 minutes after the last answer) keeps its cache
/// an hour: the marks ask for it, with the beta header that lets them; one answered within
/// minutes keeps the cheaper 5-minute marks. A server that refuses `ttl` gets the request
/// again at once with 5-minute marks, and every later one has them from the start.
#[test]
fn a_chat_answered_now_and_then_keeps_its_cache_an_hour() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let refuse_ttl = Arc::new(AtomicBool::new(false));
    let refusing = Arc::clone(&refuse_ttl);
    // (The stand-in refuses marks against the API's rules on its own: more than 4, or an
    // hour's after 5 minutes'.)
    let llm = FakeLlm::with(move |req| {
        let asks_ttl = req.json().to_string().contains(r#""ttl":"1h""#);
        if refusing.load(Ordering::SeqCst) && asks_ttl {
            return Reply::Status {
                code: 400,
                headers: vec![],
                body: json!({"type": "error", "error": {"type": "invalid_request_error",
                    "message": "system.0.cache_control.ttl: Extra inputs are not permitted"}})
                .to_string(),
            };
        }
        Reply::sse(anthropic_sse(&["ok"]))
    });
    let ago = |minutes: u64| {
        tether::time::rfc3339(std::time::SystemTime::now() - Duration::from_secs(60 * minutes))
    };
    let chat_of = |minutes: u64| {
        [("user", "hello", minutes + 1), ("assistant", "hi", minutes)]
            .iter()
            .map(|(role, text, m)| format!("{}\n", json!({"role": role, "content": text, "ts": ago(*m)})))
            .collect::<String>()
    };
    let ws = temp_dir("cache-hour");
    std::fs::create_dir_all(ws.path().join("sessions")).unwrap();
    std::fs::write(ws.path().join("sessions/telegram_5.jsonl"), chat_of(20)).unwrap();
    std::fs::write(ws.path().join("sessions/telegram_6.jsonl"), chat_of(2)).unwrap();
    let env = [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_BASE_URL", llm.url()),
        ("AEGIS_CONTEXT_RECAP", "0"),
    ];
    let a = start_agent(&ws, &env);
    a.send(&message("5", "and now?", "m-1"));
    assert_eq!(done_text(&a.reply()), "ok");
    a.send(&message("6", "and now?", "m-2"));
    assert_eq!(done_text(&a.reply()), "ok");
    let reqs = llm.requests();
    let hour = json!({"type": "ephemeral", "ttl": "1h"});
    let (slow, fast) = (reqs[0].json(), reqs[1].json());
    assert_eq!(slow["system"][0]["cache_control"], hour, "{slow}");
    assert_eq!(slow["messages"][2]["content"][0]["cache_control"], hour, "{slow}");
    assert_eq!(
        reqs[0].header("anthropic-beta"),
        Some("extended-cache-ttl-2025-04-11")
    );
    assert_eq!(
        fast["system"][0]["cache_control"], hour,
        "the tools and system prompt, for every chat"
    );
    assert_eq!(
        fast["messages"][2]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );

    drop(a);
    refuse_ttl.store(true, Ordering::SeqCst);
    let b = start_agent(&ws, &env);
    b.send(&message("5", "still there?", "m-3"));
    assert_eq!(done_text(&b.reply()), "ok", "asked again without ttl");
    b.send(&message("6", "still there?", "m-4"));
    assert_eq!(done_text(&b.reply()), "ok");
    let reqs = &llm.requests()[2..];
    let asked_ttl: Vec<bool> = reqs
        .iter()
        .map(|r| r.json().to_string().contains("\"ttl\""))
        .collect();
    assert_eq!(
        asked_ttl,
        [true, false, false],
        "refused once, then never asked again"
    );
    assert!(
        reqs[1].json().to_string().contains("cache_control"),
        "still marked"
    );
    assert_eq!(reqs[2].header("anthropic-beta"), None);
    assert!(b.proc.log().contains("refuses cache marks kept an hour"));
}

/// What each request cost, as the provider counted it: a reply's requests are added up in
/// the log, and every request by day and model in `.aegis/usage.json`.
#[test]
fn what_each_reply_costs_is_logged_and_added_up_by_day_and_model() {
    use aegis_e2e::llm::{anthropic_tool_sse, with_anthropic_usage};
    let claude = FakeLlm::scripted(vec![
        Reply::sse(with_anthropic_usage(
            anthropic_tool_sse("", &[("toolu_1", "bash", r#"{"command":"true"}"#)], 8),
            json!({"input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 9000, "output_tokens": 1,
                "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}),
        )),
        Reply::sse(with_anthropic_usage(
            anthropic_sse(&["done"]),
            json!({"input_tokens": 20, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 9300, "output_tokens": 1,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 50}}),
        )),
    ]);
    let ws = temp_dir("usage");
    let env = [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_BASE_URL", claude.url()),
        ("AEGIS_MODEL", "claude-sonnet-4-6"),
    ];
    let a = start_agent(&ws, &env);
    a.send(&message("5", "run it", "m-1"));
    assert_eq!(done_text(&a.reply()), "done");
    // The tool round's output counts come from its `message_delta` (30), the answer's (15).
    a.proc.wait_for(
        "reply for telegram/5: 2 model requests, 18682 input tokens (18300 from the cache, 350 written to it), 45 output",
        T,
    );
    let today = aegis_e2e::agent::usage_today(ws.path());
    assert_eq!(
        today["claude-sonnet-4-6"],
        json!({"requests": 2, "input": 18682, "cache_read": 18300, "cache_write": 350, "cache_write_1h": 250, "output": 45}),
        "{today}"
    );
}

/// A reply stopped midway was billed for its input and what it wrote so far (Anthropic
/// counts them when its stream starts): the record has them too.
#[test]
fn a_reply_stopped_midway_still_counts_what_it_was_billed_for() {
    use aegis_e2e::llm::with_anthropic_usage;
    let counted = json!({"input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 9000, "output_tokens": 1});
    let started = with_anthropic_usage(anthropic_sse(&["partial", "rest"]), counted);
    let llm = FakeLlm::with(move |_| Reply::Sse {
        pieces: started[..4].to_vec(), // message_start, block start, ping, "partial"
        delay: Duration::ZERO,
        // The server goes on for a second, as a real one would until it notices.
        end: End::Hang(Duration::from_secs(1)),
    });
    let ws = temp_dir("usage-cancel");
    let a = start_agent(
        &ws,
        &[
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", llm.url()),
            ("AEGIS_MODEL", "claude-sonnet-4-6"),
        ],
    );
    a.send(&message("9", "long story please", "m-1"));
    while a.harness.frames().recv_timeout(T).expect("delta").kind != "assistant.delta" {}
    a.send(&Frame::new("control.cancel", Some(Session::new("telegram", "9"))));
    assert_eq!(done_text(&a.reply()), "partial\n\n⏹ Reply cancelled.");
    // Counted when the stream ends.
    let deadline = Instant::now() + T;
    let today = loop {
        let today = aegis_e2e::agent::usage_today(&ws);
        if !today.is_null() || Instant::now() > deadline {
            break today;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        today["claude-sonnet-4-6"],
        json!({"requests": 1, "input": 9312, "cache_read": 9000, "cache_write": 300, "cache_write_1h": 0, "output": 1}),
        "{today}"
    );
}

/// The environment of an agent asking model `model` of the OpenAI-compatible server at
/// `url`, with a key.
fn openai_at<'a>(url: &'a str, model: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", url),
        ("AEGIS_MODEL", model),
    ]
}

/// [ours] With Anthropic's key in the environment too, an agent on OpenAI lets a chat
/// talk to Claude: `/model` lists Anthropic's models beside OpenAI's, `/model
/// anthropic/NAME` is checked against Anthropic's list and asked there, with Anthropic's
/// key and API, for that chat alone and across a restart. The model's commands see that
/// key no more than the agent's own. Without it, `/model anthropic/…` names the variable.
#[test]
fn a_chat_picks_a_model_of_another_provider_whose_key_is_set() {
    let openai = FakeLlm::with(|req| {
        if req.method == "GET" {
            let data = json!([{"id": "gpt-5.5", "object": "model", "created": 30, "owned_by": "openai"},
                {"id": "gpt-5.5-mini", "object": "model", "created": 30, "owned_by": "openai"},
                {"id": "dall-e-3", "object": "model", "created": 5, "owned_by": "openai"}]);
            return Reply::Status {
                code: 200,
                headers: vec![],
                body: json!({"object": "list", "data": data}).to_string(),
            };
        }
        let model = req.json()["model"].as_str().unwrap_or_default().to_string();
        Reply::sse(openai_sse(&[&format!("I am {model}.")]))
    });
    let claude = FakeLlm::with(|req| {
        if req.method == "GET" {
            let data = json!([{"type": "model", "id": "claude-opus-4-5", "display_name": "Claude Opus 4.5"},
                {"type": "model", "id": "claude-sonnet-4-6", "display_name": "Claude Sonnet 4.6"}]);
            return Reply::Status {
                code: 200,
                headers: vec![],
                body: json!({"data": data, "has_more": false}).to_string(),
            };
        }
        let body = req.json();
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        let result = last["content"]
            .as_array()
            .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_result"))
            .map(|b| b["content"].to_string());
        let asked = aegis_e2e::llm::last_content(req).to_string();
        match (result, asked.contains("your keys")) {
            (Some(seen), _) => {
                let first = seen
                    .trim_matches('"')
                    .split("\\n")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                Reply::sse(anthropic_sse(&[&format!("saw {first}")]))
            }
            (None, true) => Reply::sse(aegis_e2e::llm::anthropic_tool_sse(
                "",
                &[(
                    "t1",
                    "bash",
                    r#"{"command": "echo \"[$ANTHROPIC_API_KEY][$OPENAI_API_KEY]\""}"#,
                )],
                7,
            )),
            (None, false) => Reply::sse(anthropic_sse(&[&format!("I am {model}.")])),
        }
    });
    let ws = temp_dir("chat-model-other");
    let env = [
        ("OPENAI_API_KEY", "sk-o"),
        ("OPENAI_BASE_URL", openai.url()),
        ("AEGIS_MODEL", "openai/gpt-5.5"),
        ("ANTHROPIC_API_KEY", "sk-ant-e2e"),
        ("ANTHROPIC_BASE_URL", claude.url()),
    ];
    let a = start_agent(&ws, &env);
    assert_eq!(
        ask(&a, "1", "/model", "m1"),
        "This chat talks to gpt-5.5 (OpenAI at 127.0.0.1), the agent's model.\n\n\
         `/model NAME` switches this chat to another: gpt-5.5, gpt-5.5-mini.\n\n\
         `/model anthropic/NAME` switches it to a model of Anthropic at 127.0.0.1: claude-opus-4-5, claude-sonnet-4-6."
    );
    assert_eq!(
        ask(&a, "1", "/model anthropic/claude-sonnet-4-7", "m2"),
        "Anthropic at 127.0.0.1 lists no model “claude-sonnet-4-7”. Close: claude-sonnet-4-6."
    );
    assert_eq!(
        ask(&a, "1", "/model anthropic/claude-sonnet-4-6", "m3"),
        "This chat talks to anthropic/claude-sonnet-4-6 (Anthropic at 127.0.0.1) from now on. \
         `/model default` goes back to gpt-5.5."
    );
    assert_eq!(ask(&a, "1", "who are you?", "m4"), "I am claude-sonnet-4-6.");
    assert_eq!(ask(&a, "2", "who are you?", "m5"), "I am gpt-5.5.");
    let asked = claude.requests();
    let post = asked.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(post.header("x-api-key"), Some("sk-ant-e2e"));
    assert!(post.path.ends_with("/v1/messages"), "{}", post.path);
    assert!(
        openai.requests().iter().all(|r| r.header("x-api-key").is_none()),
        "each key goes to its own provider"
    );
    assert_eq!(
        ask(&a, "1", "what are your keys?", "m6"),
        "saw [][]",
        "the model's commands see neither key"
    );
    drop(a);
    let a = start_agent(&ws, &env);
    assert_eq!(ask(&a, "1", "still Claude?", "m7"), "I am claude-sonnet-4-6.");
    assert!(ask(&a, "1", "/model", "m8")
        .starts_with("This chat talks to anthropic/claude-sonnet-4-6 (Anthropic at 127.0.0.1), chosen here"));
    drop(a);
    let without: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("ANTHROPIC"))
        .collect();
    let a = start_agent(&ws, &without);
    assert_eq!(
        ask(&a, "3", "/model anthropic/claude-sonnet-4-6", "m9"),
        "“anthropic/claude-sonnet-4-6” is a model of Anthropic, and the agent has no Anthropic key \
         (ANTHROPIC_API_KEY is not set in its environment)."
    );
    assert_eq!(
        ask(&a, "1", "and now?", "m10"),
        "I am gpt-5.5.",
        "a chat whose provider's key is gone talks to the agent's model"
    );
}

/// The agent of `ws` (model `gpt-test`) asks twice, in chat 5 from message `m-{first}`, a
/// server that refuses `argument` as OpenAI refuses one it does not know: whether each
/// request carried it, once both are answered, and the agent.
fn asked_of_a_server_refusing(
    ws: &aegis_e2e::proc::TempDir,
    argument: &'static str,
    first: usize,
) -> (Vec<bool>, aegis_e2e::agent::Agent) {
    let refusing = FakeLlm::with(move |req| match req.json().get(argument) {
        Some(_) => aegis_e2e::llm::openai_unknown_argument(argument),
        None => Reply::sse(openai_sse(&["ok"])),
    });
    let b = start_agent(ws, &openai_at(refusing.url(), "gpt-test"));
    for i in first..first + 2 {
        b.send(&message("5", "hi", &format!("m-{i}")));
        assert_eq!(done_text(&b.reply()), "ok");
    }
    let carried = refusing
        .requests()
        .iter()
        .map(|r| r.json().get(argument).is_some())
        .collect();
    (carried, b)
}

/// OpenAI tells a request's usage only when asked (`stream_options.include_usage`): it is
/// asked, and a server that refuses the argument is asked again at once without it, and
/// never with it again.
#[test]
fn openai_is_asked_for_usage_and_a_server_that_refuses_the_question_is_asked_without() {
    use aegis_e2e::llm::with_openai_usage;
    let asking = FakeLlm::with(|_| Reply::sse(with_openai_usage(openai_sse(&["ok"]), 2006, 1920, 300)));
    let ws = temp_dir("usage-openai");
    let a = start_agent(&ws, &openai_at(asking.url(), "gpt-test"));
    a.send(&message("5", "hi", "m-1"));
    assert_eq!(done_text(&a.reply()), "ok");
    assert_eq!(
        asking.requests()[0].json()["stream_options"],
        json!({"include_usage": true})
    );
    a.proc.wait_for(
        "1 model request, 2006 input tokens (1920 from the cache), 300 output",
        T,
    );
    drop(a);

    let (asked, b) = asked_of_a_server_refusing(&ws, "stream_options", 2);
    assert_eq!(asked, [true, false, false]);
    assert!(b.proc.log().contains("refuses stream_options"));
    let today = aegis_e2e::agent::usage_today(ws.path());
    assert_eq!(
        today["gpt-test"]["requests"], 1,
        "only what a server counted: {today}"
    );
}

/// Each conversation's Chat Completions requests carry its own `prompt_cache_key` (the
/// same on every message of that chat, another for another chat, and no chat id in it),
/// so OpenAI keeps a chat's prefix in one cache; a server that refuses the argument is
/// asked again at once without it, and never with it again.
#[test]
fn each_chat_has_its_own_prompt_cache_key_unless_the_server_refuses_it() {
    let llm = FakeLlm::with(|_| Reply::sse(openai_sse(&["ok"])));
    let ws = temp_dir("cache-key");
    let env = |url| openai_at(url, "gpt-test");
    let a = start_agent(&ws, &env(llm.url()));
    for (chat, id) in [("5", "m-1"), ("6", "m-2"), ("5", "m-3")] {
        a.send(&message(chat, "hi", id));
        assert_eq!(done_text(&a.reply()), "ok");
    }
    let keys: Vec<String> = llm
        .requests()
        .iter()
        .map(|r| r.json()["prompt_cache_key"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(keys.iter().all(|k| k.starts_with("aegis-")), "{keys:?}");
    assert_eq!(keys[0], keys[2], "the same chat, the same key");
    assert_ne!(keys[0], keys[1], "another chat, another key");
    drop(a);

    let (sent, b) = asked_of_a_server_refusing(&ws, "prompt_cache_key", 4);
    assert_eq!(sent, [true, false, false]);
    assert!(b.proc.log().contains("refuses prompt_cache_key"));
}

/// A local server that reads much less than it was sent (Ollama cuts what does not fit
/// its 4,096-token window without a word) is named in a warning, once; one that reads it
/// all is not.
#[test]
fn a_server_whose_context_window_cuts_the_request_is_named_once() {
    use aegis_e2e::llm::with_openai_usage;
    let cutting = FakeLlm::with(|_| Reply::sse(with_openai_usage(openai_sse(&["ok"]), 2048, 0, 2)));
    let ws = temp_dir("window-cut");
    let a = start_agent(
        &ws,
        &[("OPENAI_BASE_URL", cutting.url()), ("AEGIS_MODEL", "qwen3:8b")],
    );
    // The tools and system prompt are about 2,300 tokens; a pasted page makes it 5,000.
    let page = "All work and no play makes Jack a dull boy. ".repeat(250);
    for i in 0..2 {
        a.send(&message("5", &page, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), "ok");
    }
    let log = a.proc.log();
    assert_eq!(log.matches("context window cuts").count(), 1, "{log}");
    assert!(
        log.contains("qwen3:8b read 2048 tokens of a request of about"),
        "{log}"
    );
    assert!(log.contains("OLLAMA_CONTEXT_LENGTH=32768"));
    drop(a);

    let whole = FakeLlm::with(|req| {
        let sent = req.body.len() as u64 / 3;
        Reply::sse(with_openai_usage(openai_sse(&["ok"]), sent, 0, 2))
    });
    let b = start_agent(
        &ws,
        &[("OPENAI_BASE_URL", whole.url()), ("AEGIS_MODEL", "qwen3:8b")],
    );
    b.send(&message("5", &page, "m-9"));
    assert_eq!(done_text(&b.reply()), "ok");
    assert!(!b.proc.log().contains("context window cuts"));
}

/// `AEGIS_CONTEXT_RECAP=0`: what falls out is forgotten, as upstream's agent does.
#[test]
fn recaps_can_be_turned_off() {
    let llm = recapping_llm();
    let ws = temp_dir("recap-off");
    let env = [
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", llm.url()),
        ("AEGIS_TOOLS", "none"),
        ("AEGIS_CONTEXT_TURNS", "2"),
        ("AEGIS_CONTEXT_RECAP", "0"),
    ];
    let a = start_agent(&ws, &env);
    for (i, text) in ["one", "two", "three", "four"].iter().enumerate() {
        a.send(&message("5", text, &format!("m-{i}")));
        assert_eq!(done_text(&a.reply()), format!("echo: {text}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(llm.requests().iter().all(|r| !is_recap_request(r)));
    assert!(!ws.path().join("sessions/telegram_5.recap.json").exists());
}

#[test]
fn hostile_session_names_stay_inside_the_sessions_folder() {
    let llm = FakeLlm::echo_openai();
    let ws = temp_dir("hostile");
    let a = start_agent(&ws, &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())]);
    let long = "x".repeat(10_000);
    let ids = ["../../etc/passwd", "/", "..", long.as_str(), "a\u{0}b"];
    for (i, id) in ids.iter().enumerate() {
        let f =
            Frame::user_message(Session::new("../telegram", *id), "hi", None).with_msg_id(format!("m{i}"));
        a.send(&f);
        assert_eq!(done_text(&a.reply()), "echo: hi");
    }
    let files: Vec<_> = std::fs::read_dir(ws.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), ids.len(), "{files:?}");
    let entries: Vec<_> = std::fs::read_dir(&ws)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec!["sessions"], "nothing written outside sessions/");
}

#[test]
fn hundred_concurrent_sessions_get_their_own_replies_once() {
    let llm = FakeLlm::prefixing("re: ", Duration::from_millis(5));
    let ws = temp_dir("hundred");
    let a = start_agent(&ws, &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())]);
    let addr = a.addr.clone();
    let senders: Vec<_> = (0..100)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for j in 0..2 {
                    let f = message(&format!("c{i}"), &format!("msg {i}.{j}"), &format!("m{i}.{j}"));
                    assert_eq!(post_to_agent(&addr, &f.to_json()).0, 202);
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let frames = collect_until_done(a.harness.frames(), 200, Duration::from_secs(60));
    let mut per_chat: std::collections::HashMap<String, Vec<String>> = Default::default();
    for f in frames.iter().filter(|f| f.kind == "assistant.done") {
        per_chat
            .entry(f.session.clone().unwrap().id)
            .or_default()
            .push(f.text_payload().unwrap());
    }
    assert_eq!(per_chat.len(), 100);
    for (chat, dones) in per_chat {
        let i = &chat[1..];
        assert_eq!(
            dones,
            vec![format!("re: msg {i}.0"), format!("re: msg {i}.1")],
            "chat {chat}"
        );
    }
    assert!(
        a.harness
            .frames()
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "extra frames"
    );
}

#[test]
fn bad_ingress_gets_json_errors_and_the_agent_keeps_working() {
    let llm = FakeLlm::echo_openai();
    let ws_bad = temp_dir("bad");
    let a = start_agent(
        &ws_bad,
        &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())],
    );
    let cases = [
        ("{not json", 400, "invalid frame JSON"),
        (
            r#"{"v":1,"type":"user.message","session":{"channel":"t","id":"1"},"payload":{"text":""}}"#,
            400,
            "non-empty",
        ),
        (r#"{"v":2,"type":"user.message"}"#, 400, "version"),
    ];
    for (body, status, want) in cases {
        let (s, b) = post_to_agent(&a.addr, body);
        assert_eq!(s, status, "{body}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert!(v["error"].as_str().unwrap().contains(want), "{b}");
    }
    let huge = format!(
        r#"{{"v":1,"type":"user.message","payload":{{"text":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    assert_eq!(post_to_agent(&a.addr, &huge).0, 413);
    a.send(&message("1", "still there?", "m"));
    assert_eq!(done_text(&a.reply()), "echo: still there?");
}

#[test]
fn egress_waits_for_a_harness_that_is_briefly_unavailable() {
    let llm = FakeLlm::echo_openai();
    let harness = FakeHarness::start();
    harness.fail_next.store(3, std::sync::atomic::Ordering::SeqCst);
    let ws_busy = temp_dir("busy");
    let a = start_agent_with(
        &ws_busy,
        &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())],
        harness,
    );
    a.send(&message("1", "hi", "m"));
    let frames = a.reply();
    assert_eq!(
        kinds(&frames),
        vec![
            "event.ack",
            "status.presence",
            // Once after a start: the agent's own commands (none here).
            "status.commands",
            "assistant.delta",
            "assistant.delta",
            "assistant.done"
        ]
    );
}

#[test]
fn direct_mode_exchanges_frames_and_reconnects_after_the_host_drops() {
    let llm = FakeLlm::echo_openai();
    let dir = temp_dir("direct");
    let sock = dir.join("tether.sock");
    let host = FakeTetherHost::bind(&sock);
    let mut cmd = command("aegis-agent");
    cmd.env("AEGIS_TETHER", format!("unix:{}", sock.display()))
        .env("AEGIS_WORKSPACE", &dir)
        .env("OPENAI_API_KEY", "k")
        .env("OPENAI_BASE_URL", llm.url());
    let _agent = Proc::spawn(cmd);
    host.wait_connected(1, T);
    // A host health request is answered.
    host.send_line(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"health\"}\n");
    let resp = host.responses().recv_timeout(T).unwrap();
    assert!(
        matches!(resp, tether::Message::Response { outcome: Ok(ref r), .. } if r.get() == r#"{"status":"ok"}"#)
    );
    host.send(&message("1", "one", "m-1"));
    assert_eq!(done_text(&collect_until_done(host.frames(), 1, T)), "echo: one");
    // Garbage on the line does not break the connection.
    host.send_line(b"this is not json\n");
    host.drop_connection();
    host.wait_connected(2, T);
    host.send(&message("1", "two", "m-2"));
    assert_eq!(done_text(&collect_until_done(host.frames(), 1, T)), "echo: two");
}

#[test]
fn help_and_bad_flags() {
    let out = command("aegis-agent").arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("AEGIS_TETHER"));
    let out = command("aegis-agent").arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = command("aegis-agent")
        .env("AEGIS_TETHER", "vsock:x:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cid must be a number"));
}

#[test]
fn a_silent_llm_times_out_with_a_clear_message() {
    let llm = FakeLlm::scripted(vec![Reply::silent()]);
    let ws = temp_dir("silent");
    let a = start_agent(
        &ws,
        &[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", llm.url()),
            ("AEGIS_LLM_READ_TIMEOUT", "1"),
            ("AEGIS_LLM_RETRIES", "2"),
        ],
    );
    a.send(&message("1", "hello?", "m"));
    let done = done_text(&a.reply());
    assert!(done.contains("stopped responding"), "{done}");
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn a_copy_of_an_answered_message_is_ignored() {
    let llm = FakeLlm::echo_openai();
    let ws_dup = temp_dir("dup");
    let a = start_agent(
        &ws_dup,
        &[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", llm.url())],
    );
    a.send(&message("1", "once", "m-1"));
    assert_eq!(done_text(&a.reply()), "echo: once");
    a.send(&message("1", "once", "m-1"));
    a.send(&message("1", "twice", "m-2"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "echo: twice");
    assert_eq!(frames.iter().filter(|f| f.kind == "assistant.done").count(), 1);
    assert_eq!(llm.requests().len(), 2, "the copy never reached the model");
}

#[test]
fn an_openai_compatible_server_works_without_a_key() {
    let llm = FakeLlm::echo_openai();
    let ws_nokey_compat = temp_dir("nokey-compat");
    let a = start_agent(
        &ws_nokey_compat,
        &[("OPENAI_BASE_URL", llm.url()), ("AEGIS_MODEL", "llama3.2")],
    );
    assert!(a.proc.log().contains("LLM provider: OpenAI (model llama3.2"));
    a.send(&message("1", "local?", "m"));
    assert_eq!(done_text(&a.reply()), "echo: local?");
    let req = &llm.requests()[0];
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.json()["model"], "llama3.2");
}

#[test]
fn images_go_to_anthropic_as_image_blocks_and_stay_in_the_history_by_reference() {
    use tether::frame::Image;
    let llm = FakeLlm::scripted(vec![Reply::sse(anthropic_sse(&["A cat."]))]);
    let ws = temp_dir("images");
    // No tool could open a photo's file: none is copied for them (tools_e2e has the rest).
    let env = [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_BASE_URL", llm.url()),
        ("AEGIS_TOOLS", "memory"),
    ];
    let png = b"\x89PNG\r\n\x1a\n cat".to_vec();
    let b64 = "iVBORw0KGgogY2F0"; // base64 of `png`
    let session = Session::new("telegram", "5");
    let a = start_agent(&ws, &env);
    let image = Image {
        media_type: "image/png".into(),
        data: Some(b64.into()),
        size: Some(png.len() as u64),
        ..Image::default()
    };
    a.send(
        &Frame::user_message_with_images(session.clone(), "what is it?", None, vec![image])
            .with_msg_id("m-1"),
    );
    assert_eq!(done_text(&a.reply()), "A cat.");
    let source = json!({"type": "base64", "media_type": "image/png", "data": b64});
    let mut content = llm.requests()[0].json()["messages"][0]["content"].clone();
    let words = unstamped(content[1]["text"].as_str().unwrap()).to_string();
    content[1]["text"] = words.into();
    assert_eq!(
        content,
        json!([{"type": "image", "source": source}, {"type": "text", "text": "what is it?"}])
    );
    let history = std::fs::read_to_string(ws.join("sessions/telegram_5.jsonl")).unwrap();
    assert!(!history.contains(b64), "bytes inline in the session: {history}");
    let blobs: Vec<_> = std::fs::read_dir(ws.join(".aegis/blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 1);
    assert_eq!(std::fs::read(&blobs[0]).unwrap(), png);
    assert!(!ws.join("inbox").exists(), "copied for no tool");
    drop(a);

    // After a restart the history still shows the model the image; an upstream-style
    // message naming a blob of the workspace works too, and a bad name is refused.
    let a = start_agent(&ws, &env);
    let blob = blobs[0].file_name().unwrap().to_str().unwrap().to_string();
    let by_name = Image {
        media_type: "image/png".into(),
        blob: Some(blob),
        ..Image::default()
    };
    let escape = Image {
        media_type: "image/png".into(),
        blob: Some("../../../etc/passwd".into()),
        ..Image::default()
    };
    a.send(
        &Frame::user_message_with_images(session, "and this?", None, vec![by_name, escape])
            .with_msg_id("m-2"),
    );
    assert_eq!(done_text(&a.reply()), "A cat.");
    let msgs = llm.requests()[1].json()["messages"].clone();
    assert_eq!(
        msgs[0]["content"][0]["source"], source,
        "the first image, from its blob"
    );
    let second = &msgs[2]["content"];
    assert_eq!(second[0]["source"], source, "the image named by blob");
    let text = second.to_string();
    assert!(text.contains("could not be received"), "{text}");
    assert!(!text.contains("root:"), "{text}");
}

/// A reasoning model's thoughts, sent in a field of their own (Ollama's `reasoning`,
/// DeepSeek's `reasoning_content`) or inline (`<think>`, as llama.cpp sends them without a
/// reasoning parser), stream as `reasoning.delta` frames that end with `reasoning.done`,
/// as upstream's agent sends them; the reply, its history line and the model's next
/// context hold the answer alone (the thoughts behind a tool call go with it, apart).
#[test]
fn a_reasoning_models_thoughts_stream_apart_and_never_join_the_reply() {
    let mut thinks_then_calls = reasoning_sse("reasoning_content", &["I should look", " at the files."], &[]);
    thinks_then_calls.truncate(2); // the thoughts, then the tool call's own chunks
    thinks_then_calls.extend(openai_tool_sse(
        "",
        &[("call_1", "list_files", r#"{"path": "."}"#)],
        8,
    ));
    let llm = FakeLlm::scripted(vec![
        Reply::sse(reasoning_sse(
            "reasoning",
            &["The user", " asks for", " a capital."],
            &["Par", "is."],
        )),
        Reply::sse(openai_sse(&[
            "\n<think>\nThey",
            " thank me.</th",
            "ink>\n\nYou're",
            " welcome!",
        ])),
        Reply::sse(thinks_then_calls),
        Reply::sse(openai_sse(&["One file."])),
    ]);
    let ws = temp_dir("reasoning");
    let a = start_agent(
        &ws,
        &[("OPENAI_BASE_URL", llm.url()), ("AEGIS_MODEL", "qwen3:8b")],
    );
    a.send(&message("9", "Capital of France?", "m-1"));
    let frames = a.reply();
    assert_eq!(
        kinds(&frames),
        vec![
            "event.ack",
            "status.presence",
            // Once after a start: the agent's own commands (none here).
            "status.commands",
            "reasoning.delta",
            "reasoning.delta",
            "reasoning.delta",
            "reasoning.done",
            "assistant.delta",
            "assistant.delta",
            "assistant.done"
        ]
    );
    assert_eq!(
        texts(&frames, "reasoning.delta"),
        vec!["The user", " asks for", " a capital."]
    );
    assert!(frames.iter().all(|f| f.msg_id.as_deref() == Some("m-1")));
    assert_eq!(done_text(&frames), "Paris.");

    a.send(&message("9", "Thanks!", "m-2"));
    let frames = a.reply();
    assert_eq!(texts(&frames, "reasoning.delta").concat(), "\nThey thank me.");
    assert_eq!(texts(&frames, "assistant.delta").concat(), "You're welcome!");
    let done = frames.iter().position(|f| f.kind == "reasoning.done").unwrap();
    let first_text = frames.iter().position(|f| f.kind == "assistant.delta").unwrap();
    assert!(done < first_text, "{:?}", kinds(&frames));
    assert_eq!(done_text(&frames), "You're welcome!");

    // Thoughts that lead to a tool call end before the tool runs.
    a.send(&message("9", "What is here?", "m-3"));
    let frames = a.reply();
    let k = kinds(&frames);
    let done = k
        .iter()
        .position(|k| k == "reasoning.done")
        .expect("reasoning.done");
    let tool = frames
        .iter()
        .position(|f| {
            f.kind == "status.presence"
                && f.payload_as::<tether::frame::Presence>().unwrap().state == "tool: list_files"
        })
        .expect("the tool's presence");
    assert!(done < tool, "{k:?}");
    assert_eq!(
        texts(&frames, "reasoning.delta").concat(),
        "I should look at the files."
    );
    assert_eq!(done_text(&frames), "One file.");

    // What the model is sent next, and what the session keeps, are the answers alone,
    // but for the thoughts behind the tool call, which go back with it in their own field
    // (as DeepSeek and Qwen's chat template want them).
    let history = std::fs::read_to_string(ws.join("sessions/telegram_9.jsonl")).unwrap();
    let sent = llm.requests()[3].json()["messages"].clone();
    for thought in ["capital.", "thank me", "think>"] {
        assert!(!history.contains(thought), "{thought} in {history}");
        assert!(!sent.to_string().contains(thought), "{thought} in {sent}");
    }
    let with_call = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.get("tool_calls").is_some())
        .unwrap();
    assert_eq!(with_call["reasoning_content"], "I should look at the files.");
    assert_eq!(sent.to_string().matches("look at").count(), 1, "{sent}");
    assert_eq!(history.matches("look at").count(), 1, "{history}");
    assert!(
        history.contains("\"Paris.\"") && history.contains("\"You're welcome!\""),
        "{history}"
    );
}

/// A 2-second voice message `bytes` in chat `chat`, as the gateway passes one inline.
fn voice(chat: &str, id: &str, bytes: &[u8]) -> Frame {
    use base64::Engine;
    let payload = tether::frame::UserMessage {
        text: "[voice message, 2 s]".into(),
        audio: vec![tether::frame::Audio {
            media_type: "audio/ogg".into(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            duration: Some(2),
            path: None,
        }],
        // A sender known by id only, as a host may give one: no name in the text.
        user: Some(User {
            id: Some("7".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Frame::new("user.message", Some(Session::new("telegram", chat)))
        .with_payload(&payload)
        .with_msg_id(id)
}

/// A voice message: the agent has the recording written down by OpenAI's speech-to-text
/// API, with the key agent.json names (the chat model being another server), tries once
/// more after a rate limit, and tells the model why when it cannot be written down.
#[test]
fn voice_messages_are_transcribed_or_the_model_is_told_why_not() {
    use aegis_e2e::openai_audio::{fake_ogg, FakeSpeech};
    let speech = FakeSpeech::start(Some("sk-speech"));
    let llm = FakeLlm::echo_openai();
    let ws = temp_dir("voice");
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    std::fs::write(
        ws.join(".aegis/agent.json"),
        r#"{"voice": {"openai_api_key_env": "MY_OPENAI_KEY"}}"#,
    )
    .unwrap();
    let base = speech.base_url();
    let a = start_agent(
        &ws,
        &[
            ("OPENAI_BASE_URL", llm.url()),
            ("MY_OPENAI_KEY", "sk-speech"),
            ("OPENAI_AUDIO_BASE_URL", base.as_str()),
            ("AEGIS_TOOLS", "bash"),
            ("AEGIS_USER_DAILY_TOKENS", "100000"),
        ],
    );
    let ogg = fake_ogg(5_000, 1);
    speech.says(&ogg, " Remind me to call Bob. ");
    speech
        .rate_limit_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    a.send(&voice("1", "v-1", &ogg));
    assert_eq!(
        done_text(&a.reply()),
        "echo: [voice message, 2 s]\n🎤 Remind me to call Bob."
    );
    let sent = speech.requests();
    assert_eq!(sent.len(), 2, "tried once more after the 429");
    assert_eq!(sent[1].key.as_deref(), Some("sk-speech"));
    assert_eq!(sent[1].model, "gpt-4o-mini-transcribe");
    // What it cost is counted, once (the 429 cost nothing).
    let heard = &aegis_e2e::agent::usage_today(&ws)["gpt-4o-mini-transcribe"];
    assert_eq!(heard["requests"], 1, "{heard}");
    assert!(
        heard["input"].as_u64() > Some(10) && heard["output"].as_u64() > Some(1),
        "{heard}"
    );
    // ... for the chat's and the sender's daily limits too (the echo counts nothing).
    let counted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join(".aegis/usage-chats.json")).unwrap()).unwrap();
    let both = heard["input"].as_u64().unwrap() + heard["output"].as_u64().unwrap();
    assert_eq!(
        (&counted["chats"]["telegram/1"], &counted["users"]["telegram/7"]),
        (&json!(both), &json!(both)),
        "{counted}"
    );
    // The key is never logged.
    assert!(!a.proc.log().contains("sk-speech"), "the key was logged");

    // Stopped while the service listens (for a minute, longer than the reply is waited
    // for): the reply ends at once, the service sees the connection close, the model is
    // not asked, and the message is not stored half-heard.
    speech.delay_ms.store(60_000, std::sync::atomic::Ordering::SeqCst);
    let asked = llm.requests().len();
    a.send(&voice("1", "v-slow", &fake_ogg(4_000, 9)));
    while speech.requests().len() < 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    a.send(&Frame::new("control.cancel", Some(Session::new("telegram", "1"))));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "⏹ Reply cancelled.");
    let deadline = Instant::now() + T;
    while speech.walked_away.load(std::sync::atomic::Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(speech.walked_away.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(llm.requests().len(), asked);
    let history = std::fs::read_to_string(ws.join("sessions/telegram_1.jsonl")).unwrap();
    assert!(!history.contains("v-slow"), "{history}");
    speech.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);

    speech
        .quota_used_up
        .store(true, std::sync::atomic::Ordering::SeqCst);
    a.send(&voice("1", "v-2", &fake_ogg(3_000, 2)));
    let text = done_text(&a.reply());
    assert!(
        text.starts_with(
            "echo: [voice message, 2 s]\n[not transcribed: the OpenAI account has no quota left (HTTP 429"
        ),
        "{text}"
    );

    // Without any speech-to-text set up: the model still hears of the message, and why.
    let ws2 = temp_dir("voice-none");
    let b = start_agent(&ws2, &[("OPENAI_BASE_URL", llm.url()), ("AEGIS_TOOLS", "none")]);
    b.send(&voice("2", "v-3", &ogg));
    let text = done_text(&b.reply());
    assert!(
        text.contains(
            "[not transcribed: speech to text is not set up: the chat model's server is not OpenAI's"
        ),
        "{text}"
    );
    assert_eq!(speech.requests().len(), 4);

    // The key agent.json names is hidden from commands, as the model's own.
    let tool_llm = FakeLlm::scripted(vec![
        Reply::sse(openai_tool_sse(
            "",
            &[("c1", "bash", r#"{"command": "echo \"[$MY_OPENAI_KEY]\""}"#)],
            50,
        )),
        Reply::sse(openai_sse(&["done"])),
    ]);
    let ws3 = temp_dir("voice-env");
    std::fs::create_dir_all(ws3.join(".aegis")).unwrap();
    std::fs::write(
        ws3.join(".aegis/agent.json"),
        r#"{"voice": {"openai_api_key_env": "MY_OPENAI_KEY"}}"#,
    )
    .unwrap();
    let c = start_agent(
        &ws3,
        &[
            ("OPENAI_BASE_URL", tool_llm.url()),
            ("MY_OPENAI_KEY", "sk-speech"),
            ("AEGIS_TOOLS", "bash"),
        ],
    );
    c.send(&message("3", "env?", "m-env"));
    assert_eq!(done_text(&c.reply()), "done");
    assert_eq!(
        aegis_e2e::llm::tool_results(&tool_llm.requests()[1]),
        vec![("c1".to_string(), "[]\nexit status: 0".to_string())]
    );
}

/// OpenAI shuts speech-to-text models down too: with the default model gone, the agent
/// asks which models the key may use, once, and writes voice messages down with the
/// newest transcriber of the same size from then on. A model the user named is never
/// replaced: the model hears of the 404 and can tell the user.
#[test]
fn a_retired_default_speech_model_gives_way_to_the_newest_transcriber_of_its_size() {
    use aegis_e2e::openai_audio::{fake_ogg, FakeSpeech};
    use std::sync::atomic::Ordering;
    let speech = FakeSpeech::start(Some("sk-speech"));
    speech
        .retired
        .lock()
        .unwrap()
        .push("gpt-4o-mini-transcribe".into());
    let llm = FakeLlm::echo_openai();
    let voice = |id: &str, bytes: &[u8]| voice("1", id, bytes);
    let base = speech.base_url();
    let env = [
        ("OPENAI_BASE_URL", llm.url()),
        ("MY_OPENAI_KEY", "sk-speech"),
        ("OPENAI_AUDIO_BASE_URL", base.as_str()),
        ("AEGIS_TOOLS", "none"),
    ];
    let ws = temp_dir("voice-retired");
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    std::fs::write(
        ws.join(".aegis/agent.json"),
        r#"{"voice": {"openai_api_key_env": "MY_OPENAI_KEY"}}"#,
    )
    .unwrap();
    let a = start_agent(&ws, &env);
    let (one, two) = (fake_ogg(3_000, 1), fake_ogg(3_000, 2));
    speech.says(&one, "Call Bob.");
    speech.says(&two, "And Alice.");
    a.send(&voice("v-1", &one));
    assert_eq!(done_text(&a.reply()), "echo: [voice message, 2 s]\n🎤 Call Bob.");
    a.send(&voice("v-2", &two));
    assert_eq!(done_text(&a.reply()), "echo: [voice message, 2 s]\n🎤 And Alice.");
    let models: Vec<String> = speech.requests().into_iter().map(|r| r.model).collect();
    assert_eq!(
        models,
        [
            "gpt-4o-mini-transcribe",
            "gpt-5-mini-transcribe",
            "gpt-5-mini-transcribe"
        ],
        "the retired model once, then the newest mini transcriber (not the diarizer, not a chat model)"
    );
    assert_eq!(
        speech.model_lists.load(Ordering::SeqCst),
        1,
        "the list is asked for once"
    );
    assert!(
        a.proc
            .log()
            .contains("speech-to-text model gpt-4o-mini-transcribe is gone; using gpt-5-mini-transcribe"),
        "{}",
        a.proc.log()
    );
    drop(a);

    // Named by the user: kept, and the model hears why nothing was written down.
    let ws2 = temp_dir("voice-retired-named");
    std::fs::create_dir_all(ws2.join(".aegis")).unwrap();
    std::fs::write(
        ws2.join(".aegis/agent.json"),
        r#"{"voice": {"openai_api_key_env": "MY_OPENAI_KEY", "model": "gpt-4o-mini-transcribe"}}"#,
    )
    .unwrap();
    let b = start_agent(&ws2, &env);
    b.send(&voice("v-3", &one));
    let text = done_text(&b.reply());
    assert!(
        text.contains("[not transcribed: the speech-to-text API failed (HTTP 404: The model `gpt-4o-mini-transcribe` does not exist"),
        "{text}"
    );
    assert_eq!(speech.model_lists.load(Ordering::SeqCst), 1);
    assert_eq!(speech.requests().last().unwrap().model, "gpt-4o-mini-transcribe");
}

/// DeepSeek in thinking mode (its default since V4) refuses every request whose tool
/// calls come without the thoughts that led to them: the agent keeps them with the
/// calls, in the session file too, and sends them back in the round after, with the next
/// message, and after a restart. Tool calls an earlier model made (none kept) get an
/// empty one once DeepSeek has asked.
#[test]
fn deepseeks_thoughts_behind_tool_calls_go_back_with_every_later_request() {
    use aegis_e2e::llm::{deepseek_sse, deepseek_thinking_refusal, last_user_text, tool_results};
    let llm = FakeLlm::with(|req| {
        let body = req.json();
        if let Some(refusal) = deepseek_thinking_refusal(&body) {
            return refusal;
        }
        let asked = last_user_text(req);
        if asked.contains("run it") && tool_results(req).is_empty() {
            return Reply::sse(deepseek_sse(
                &["The user wants", " the date."],
                "",
                Some(("call_00_d", "bash", r#"{"command": "echo Sunday"}"#)),
            ));
        }
        Reply::sse(deepseek_sse(&["Easy."], &format!("done: {asked}"), None))
    });
    let ws = temp_dir("deepseek-thinking");
    let env = [
        ("OPENAI_API_KEY", "sk-ds"),
        ("OPENAI_BASE_URL", llm.url()),
        ("AEGIS_MODEL", "deepseek-v4-flash"),
    ];
    let a = start_agent(&ws, &env);
    a.send(&message("3", "what day is it? run it", "m-1"));
    assert_eq!(done_text(&a.reply()), "done: what day is it? run it");
    a.send(&message("3", "thanks", "m-2"));
    assert_eq!(done_text(&a.reply()), "done: thanks");
    drop(a);
    let b = start_agent(&ws, &env);
    b.send(&message("3", "again", "m-3"));
    assert_eq!(done_text(&b.reply()), "done: again");
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 4, "no request refused");
    for r in &reqs[1..] {
        let calls: Vec<serde_json::Value> = r.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m.get("tool_calls").is_some())
            .cloned()
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["reasoning_content"], "The user wants the date.");
    }
    let session = std::fs::read_to_string(ws.path().join("sessions/telegram_3.jsonl")).unwrap();
    assert_eq!(
        session
            .matches(r#""reasoning_content":"The user wants the date.""#)
            .count(),
        1
    );
    assert!(!session.contains("Easy."), "thoughts behind answers are not kept");

    // A conversation whose tool calls an earlier model made (upstream's line shape).
    let ws = temp_dir("deepseek-older");
    aegis_e2e::agent::write_session_with_tool_calls(ws.path(), "4");
    let c = start_agent(&ws, &env);
    c.send(&message("4", "and now?", "m-1"));
    assert_eq!(done_text(&c.reply()), "done: and now?");
    assert!(
        c.proc.log().contains("asking again with stand-ins"),
        "{}",
        c.proc.log()
    );
    let last = llm.requests().pop().unwrap().json();
    assert_eq!(last["messages"][2]["reasoning_content"], "");
}

/// A model Chat Completions does not serve (the pro and codex models) is asked through
/// the Responses API instead, learnt from the refusal: its reasoning summary, its text,
/// a tool round with the call and its output sent back as input items, the usage; the
/// next message goes there at once.
#[test]
fn a_model_served_only_by_the_responses_api_is_asked_there() {
    use aegis_e2e::llm::{responses_only, responses_refusal, responses_sse};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let round = AtomicUsize::new(0);
    let llm = FakeLlm::with(move |req| {
        if req.path.ends_with("/chat/completions") {
            return responses_only();
        }
        if let Some(refused) = responses_refusal(&req.json()) {
            return refused;
        }
        // Summaries of the reasoning come only to a request that asks for them.
        let summaries = req.json()["reasoning"]["summary"] == "auto";
        let thoughts: &[&str] = if summaries {
            &["Checking", " the shell."]
        } else {
            &[]
        };
        match round.fetch_add(1, SeqCst) {
            0 => Reply::sse(responses_sse(
                thoughts,
                &["Let me look."],
                &[("call_1", "bash", r#"{"command": "echo from-responses"}"#)],
                (200, 0, 20),
            )),
            1 => Reply::sse(responses_sse(
                &[],
                &["It says ", "from-responses."],
                &[],
                (300, 200, 10),
            )),
            _ => Reply::sse(responses_sse(&[], &["Again."], &[], (400, 300, 5))),
        }
    });
    let ws = temp_dir("responses-api");
    let a = start_agent(&ws, &openai_at(llm.url(), "gpt-5.5-pro"));
    a.send(&message("1", "what does echo say?", "m-1"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "Let me look.\n\nIt says from-responses.");
    assert_eq!(texts(&frames, "reasoning.delta").concat(), "Checking the shell.");
    assert!(a.proc.log().contains("Responses API"), "{}", a.proc.log());
    a.send(&message("1", "once more", "m-2"));
    assert_eq!(done_text(&a.reply()), "Again.");

    let reqs = llm.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/chat/completions", "/responses", "/responses", "/responses"],
        "asked there from the refusal on"
    );
    assert_eq!(reqs[1].json()["include"], json!(["reasoning.encrypted_content"]));
    let body = reqs[2].json();
    assert_eq!(
        (body["store"].as_bool(), body["stream"].as_bool()),
        (Some(false), Some(true))
    );
    let input = body["input"].as_array().unwrap();
    // The reasoning that led to the call goes back before it, as it came.
    let thought = input
        .iter()
        .position(|i| i["type"] == "reasoning")
        .expect("the reasoning sent back");
    assert_eq!(input[thought]["encrypted_content"], "enc:Checking the shell.");
    let at_call = input.iter().position(|i| i["type"] == "function_call").unwrap();
    assert!(thought < at_call, "{input:?}");
    let call = &input[at_call];
    assert_eq!(
        (call["call_id"].as_str(), call["name"].as_str()),
        (Some("call_1"), Some("bash"))
    );
    let output = input
        .iter()
        .find(|i| i["type"] == "function_call_output")
        .unwrap();
    assert_eq!(output["call_id"], "call_1");
    assert!(
        output["output"].as_str().unwrap().contains("from-responses"),
        "{output}"
    );
    assert!(body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["strict"] == false));
    assert_eq!(
        aegis_e2e::agent::usage_today(&ws)["gpt-5.5-pro"],
        json!({"requests": 3, "input": 900, "cache_read": 500, "cache_write": 0, "cache_write_1h": 0, "output": 35})
    );
}

/// A server that refuses what the agent corrected a request to (here: it answers the
/// Responses API as Chat Completions did) is not asked forever: the user gets the refusal.
#[test]
fn a_server_refusing_every_correction_is_not_asked_forever() {
    let llm = FakeLlm::with(|_| aegis_e2e::llm::responses_only());
    let ws = temp_dir("responses-loop");
    let a = start_agent(&ws, &openai_at(llm.url(), "gpt-5.5-pro"));
    a.send(&message("1", "hi", "m-1"));
    let done = done_text(&a.reply());
    assert!(done.contains("only supported in v1/responses"), "{done}");
    assert_eq!(llm.requests().len(), 9, "the first request and eight corrections");
}

/// OpenAI refuses reasoning summaries to an organization it has not verified: the agent
/// asks again without them, and from then on, and the answer comes.
#[test]
fn an_organization_openai_has_not_verified_is_answered_without_reasoning_summaries() {
    use aegis_e2e::llm::{responses_only, responses_refusal, responses_sse, unverified_summaries};
    let llm = FakeLlm::with(|req| {
        if req.path.ends_with("/chat/completions") {
            return responses_only();
        }
        let body = req.json();
        responses_refusal(&body)
            .or_else(|| unverified_summaries(&body))
            .unwrap_or_else(|| Reply::sse(responses_sse(&[], &["Fine."], &[], (10, 0, 1))))
    });
    let ws = temp_dir("responses-unverified");
    let a = start_agent(&ws, &openai_at(llm.url(), "gpt-5.5-pro"));
    a.send(&message("1", "hi", "m-1"));
    assert_eq!(done_text(&a.reply()), "Fine.");
    a.send(&message("1", "again", "m-2"));
    assert_eq!(done_text(&a.reply()), "Fine.");
    let summaries: Vec<bool> = llm.requests()[1..]
        .iter()
        .map(|r| r.json()["reasoning"].get("summary").is_some())
        .collect();
    assert_eq!(summaries, [true, false, false], "asked once, then never again");
    assert!(
        a.proc.log().contains("no reasoning summaries"),
        "{}",
        a.proc.log()
    );
}

/// `AEGIS_OPENAI_API=responses` asks the Responses API from the first request (its
/// reasoning summaries shown) for a model Chat Completions serves too; a value that is
/// neither stops the agent with a message naming the variable.
#[test]
fn the_responses_api_can_be_chosen_from_the_start() {
    use aegis_e2e::llm::{responses_refusal, responses_sse};
    let llm = FakeLlm::with(|req| {
        let body = req.json();
        if let Some(refused) = req
            .path
            .ends_with("/responses")
            .then(|| responses_refusal(&body))
            .flatten()
        {
            return refused;
        }
        match req.path.ends_with("/responses") {
            true => Reply::sse(responses_sse(&["Weighing it."], &["Fine."], &[], (10, 0, 1))),
            false => Reply::sse(openai_sse(&["chat"])),
        }
    });
    let ws = temp_dir("responses-chosen");
    let a = start_agent(
        &ws,
        &[
            ("OPENAI_API_KEY", "k"),
            ("OPENAI_BASE_URL", llm.url()),
            ("AEGIS_MODEL", "gpt-5.5"),
            ("AEGIS_OPENAI_API", "responses"),
        ],
    );
    a.send(&message("1", "hi", "m-1"));
    let frames = a.reply();
    assert_eq!(done_text(&frames), "Fine.");
    assert_eq!(texts(&frames, "reasoning.delta").concat(), "Weighing it.");
    let paths: Vec<String> = llm.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/responses"]);

    let bad = temp_dir("responses-bad");
    let out = command("aegis-agent")
        .env("AEGIS_WORKSPACE", bad.path())
        .env("OPENAI_API_KEY", "k")
        .env("AEGIS_OPENAI_API", "completions")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AEGIS_OPENAI_API") && err.contains("\"responses\""),
        "{err}"
    );
}

/// The operator's daily limits: a chat's replies (its topics with it) and the agent's
/// requests, cache reads counting a tenth. A reply that uses a limit up stops before its
/// next request; a message that finds one used up is not sent to the model; a scheduled
/// task tells its chat once what it was to do; the counts outlive a restart.
#[test]
fn daily_limits_stop_replies_and_refuse_messages_until_the_next_day() {
    use aegis_e2e::llm::with_openai_usage;
    use tether::frame::kind;
    let llm = FakeLlm::with(|req| match aegis_e2e::llm::last_user_text(req).as_str() {
        // 400 input, 10 output: 410 a round.
        "loop tools" => Reply::sse(with_openai_usage(
            openai_tool_sse("", &[("call_1", "bash", r#"{"command":"true"}"#)], 8),
            400,
            0,
            10,
        )),
        // 100 uncached, 500 from the cache (50), 50 output: 200.
        _ => Reply::sse(with_openai_usage(openai_sse(&["ok"]), 600, 500, 50)),
    });
    let ws = temp_dir("limits");
    let env = [
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", llm.url()),
        ("AEGIS_TOOLS", "shell"),
        ("AEGIS_CHAT_DAILY_TOKENS", "1000"),
        ("AEGIS_DAILY_TOKENS", "2000"),
        ("AEGIS_USER_DAILY_TOKENS", "400"),
        // The stopped reply pushes the first out of the window: no recap past the limit.
        ("AEGIS_CONTEXT_TURNS", "6"),
    ];
    // A one-time task, for a run the limit keeps from the model.
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    let task = json!({"id": "stretch", "schedule": "once", "message": "Remind me to stretch.",
        "session": "stretch", "at": "2026-12-07T10:00:00Z", "reply_to": {"channel": "telegram", "id": "9"}});
    std::fs::write(
        ws.join(".aegis/cron.json"),
        json!({"entries": [task], "next_id": 1}).to_string(),
    )
    .unwrap();
    let mut a = start_agent(&ws, &env);
    assert_eq!(a.answer(&message("5", "hi", "m-1")), "ok");
    // 200, then 610: on; then 1,020: stopped after the second round's tool.
    let stopped = a.answer(&message("5", "loop tools", "m-2"));
    assert!(
        stopped.starts_with(
            "⚠️ Stopped: this chat has used its daily limit (1,020 of 1,000 tokens today). Send a message after 00:00 UTC (in "
        ),
        "{stopped}"
    );
    assert_eq!(llm.requests().len(), 3);
    let session = std::fs::read_to_string(ws.join("sessions/telegram_5.jsonl")).unwrap();
    assert!(
        session.contains("⚠️ Stopped: this chat"),
        "the model will know why"
    );
    // The chat, and its topics, are refused without a request; another chat is not.
    for (chat, id) in [("5", "m-3"), ("5:t9", "m-4")] {
        let refused = a.answer(&message(chat, "again", id));
        assert!(
            refused
                .starts_with("⚠️ Not sent to the model: this chat has used its daily limit (1,020 of 1,000"),
            "{chat}: {refused}"
        );
    }
    assert_eq!(llm.requests().len(), 3);
    let session = std::fs::read_to_string(ws.join("sessions/telegram_5.jsonl")).unwrap();
    assert!(!session.contains("again"), "a refused message is not taken");
    // A copy of a message answered before is dropped, as ever, not refused.
    a.send(&message("5", "hi", "m-1"));
    a.send(&message("5", "/usage", "m-1b"));
    let next = a.reply();
    assert_eq!(
        next.last().unwrap().msg_id.as_deref(),
        Some("m-1b"),
        "{:?}",
        kinds(&next)
    );
    assert_eq!(a.answer(&message("6", "hi", "m-5")), "ok");
    let usage = a.answer(&message("6", "/usage", "m-6"));
    assert!(
        usage.ends_with(
            "Daily limits (UTC; a token read from the prompt cache counts a tenth): the agent 1,220 of 2,000 tokens; this chat 200 of 1,000 tokens."
        ),
        "{usage}"
    );
    // Each person's, in a group: Alice's third message is refused, Bob's is not.
    let from = |user: &str, text: &str, id: &str| {
        let who = User {
            id: Some(user.into()),
            ..Default::default()
        };
        Frame::user_message(Session::new("telegram", "-100"), text, Some(who)).with_msg_id(id)
    };
    for id in ["m-7", "m-8"] {
        assert_eq!(a.answer(&from("42", "hi", id)), "ok");
    }
    let refused = a.answer(&from("42", "hi", "m-9"));
    assert!(
        refused.starts_with(
            "⚠️ Not sent to the model: you have used your daily limit (400 of 400 tokens today)."
        ),
        "{refused}"
    );
    assert!(
        a.answer(&from("7", "/usage", "m-10")).ends_with(
            "the agent 1,620 of 2,000 tokens; this chat 400 of 1,000 tokens; you 0 of 400 tokens."
        ),
        "Bob's own"
    );
    assert_eq!(a.answer(&from("7", "hi", "m-11")), "ok");
    // The agent's: 2,020 and every chat is refused.
    assert_eq!(a.answer(&message("8", "hi", "m-12")), "ok");
    let refused = a.answer(&message("9", "hi", "m-13"));
    assert!(
        refused.starts_with(
            "⚠️ Not sent to the model: the agent has used its daily limit (2,020 of 2,000 tokens today)."
        ),
        "{refused}"
    );
    // A task's run tells its chat what it was to do, once; a later run ends unseen.
    let run = |minute: u64| {
        Frame::new(kind::USER_MESSAGE, Some(Session::new("cron", "stretch")))
            .with_payload(&tether::frame::UserMessage {
                text: "Remind me to stretch.".into(),
                reply_to: Some(Session::new("telegram", "9")),
                ..Default::default()
            })
            .with_msg_id(format!("cron-stretch-{minute}"))
    };
    a.send(&run(29_000_000));
    let told = a.reply();
    let done = told.last().unwrap();
    assert_eq!(done.session.as_ref().unwrap().id, "9");
    assert!(
        done_text(&told).starts_with("⚠️ A scheduled task did not run: the agent has used its daily limit")
            && done_text(&told).ends_with("Its text: Remind me to stretch."),
        "{}",
        done_text(&told)
    );
    let tasks = std::fs::read_to_string(ws.join(".aegis/cron.json")).unwrap();
    assert!(!tasks.contains("stretch"), "a one-time task is done: {tasks}");
    a.send(&run(29_000_001));
    let unseen = a.reply();
    let done = unseen.last().unwrap();
    assert_eq!(
        (
            done.session.as_ref().unwrap().channel.as_str(),
            done_text(&unseen).as_str()
        ),
        ("cron", "")
    );
    assert_eq!(llm.requests().len(), 8);
    // Counted across a restart.
    a.proc.kill9();
    let b = start_agent(&ws, &env);
    assert!(
        b.answer(&message("5", "/usage", "m-14"))
            .ends_with("the agent 2,020 of 2,000 tokens; this chat 1,020 of 1,000 tokens."),
        "kept"
    );
    assert!(
        b.answer(&from("42", "/usage", "m-15")).ends_with(
            "the agent 2,020 of 2,000 tokens; this chat 600 of 1,000 tokens; you 400 of 400 tokens."
        ),
        "kept"
    );
    assert!(b
        .answer(&message("5", "still there?", "m-16"))
        .starts_with("⚠️ Not sent to the model: the agent has used"));
    assert_eq!(llm.requests().len(), 8);
}

/// A recap is the chat's as its replies are: its tokens count against the chat's and the
/// sender's daily limits.
#[test]
fn a_recap_counts_for_its_chat_and_sender() {
    use aegis_e2e::llm::with_openai_usage;
    let llm = FakeLlm::with(|_| Reply::sse(with_openai_usage(openai_sse(&["ok"]), 150, 0, 50)));
    let ws = temp_dir("limits-recap");
    let env = [
        ("OPENAI_API_KEY", "k"),
        ("OPENAI_BASE_URL", llm.url()),
        ("AEGIS_TOOLS", "none"),
        ("AEGIS_CONTEXT_TURNS", "2"),
        ("AEGIS_CHAT_DAILY_TOKENS", "100000"),
        ("AEGIS_USER_DAILY_TOKENS", "100000"),
    ];
    let a = start_agent(&ws, &env);
    let alice = User {
        id: Some("42".into()),
        ..Default::default()
    };
    for (text, id) in [("one", "m-1"), ("two", "m-2")] {
        a.send(
            &Frame::user_message(Session::new("telegram", "5"), text, Some(alice.clone())).with_msg_id(id),
        );
        assert_eq!(done_text(&a.reply()), "ok");
    }
    // The first exchange fell out of a window of two turns: recapped, 200 more.
    wait_for_file(&ws.join("sessions/telegram_5.recap.json"), |t| t.contains("ok"));
    wait_for_file(&ws.join(".aegis/usage-chats.json"), |t| t.contains("600"));
    // A scheduled run, which hosts send as from `cron`, is its chat's and nobody's.
    let run = Frame::new("user.message", Some(Session::new("cron", "daily")))
        .with_payload(&tether::frame::UserMessage {
            text: "Daily summary.".into(),
            user: Some(User {
                id: Some("cron".into()),
                name: Some("Scheduled Task".into()),
                ..Default::default()
            }),
            reply_to: Some(Session::new("telegram", "5")),
            ..Default::default()
        })
        .with_msg_id("cron-daily-29000000");
    assert_eq!(a.answer(&run), "ok");
    let counted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join(".aegis/usage-chats.json")).unwrap()).unwrap();
    assert_eq!(
        (&counted["chats"]["telegram/5"], &counted["users"]),
        (&json!(800), &json!({"telegram/42": 600})),
        "{counted}"
    );
    assert_eq!(llm.requests().len(), 4);
}
