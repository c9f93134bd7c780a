//! The real `aegis-gateway` against a fake Telegram Bot API, with the real
//! `aegis-kit serve` + `aegis-agent` and a fake LLM behind it.

use std::time::Duration;

use aegis_e2e::llm::{openai_sse, reasoning_sse, End, FakeLlm, Reply};
use aegis_e2e::proc::{temp_dir, Proc};
use aegis_e2e::proxy::ConnectProxy;
use aegis_e2e::socks::Socks5Proxy;
use aegis_e2e::stack::{Stack, T};
use aegis_e2e::telegram::Fault;
use aegis_e2e::tls::{fixture, TlsFront};
use serde_json::{json, Value};

const CHAT: i64 = 4242;

fn stack(name: &str, llm: FakeLlm) -> Stack {
    let mut s = Stack::new(name, llm, &[]);
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s
}

#[test]
fn round_trip_with_typing_and_user_identity() {
    let s = stack("gw-roundtrip", FakeLlm::echo_openai());
    s.telegram.push_text(CHAT, 7, "John", "hello");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [John]: hello")
    });
    assert_eq!(msgs.len(), 1, "one reply message");
    let typing = s.telegram.calls_of("sendChatAction");
    assert!(!typing.is_empty());
    assert_eq!(typing[0].body["action"], "typing");
    assert_eq!(
        aegis_e2e::llm::last_content(&s.llm.requests()[0]),
        "[John]: hello"
    );
    // The bot token appears in no log line.
    let log = s.gateway.as_ref().unwrap().log();
    assert!(
        !log.contains(s.telegram.token()),
        "token leaked into the gateway log"
    );
    assert!(!s.serve.log().contains(s.telegram.token()));
}

#[test]
fn streaming_edits_are_throttled_and_the_final_text_lands() {
    let texts: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&refs),
        delay: Duration::from_millis(100),
        end: End::Finish,
    }]);
    let s = stack("gw-throttle", llm);
    s.telegram.push_text(CHAT, 1, "Ann", "count");
    let full: String = texts.concat();
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.last()
            .is_some_and(|m| m.visible() == full.trim_end() || m.visible() == full)
    });
    assert_eq!(msgs.len(), 1);
    let edits = s.telegram.calls_of("editMessageText");
    println!(
        "edit mode: {} sendMessage + {} editMessageText + {} sendMessageDraft (refused) for a 2 s reply",
        s.telegram.calls_of("sendMessage").len(),
        edits.len(),
        s.telegram.calls_of("sendMessageDraft").len()
    );
    // About 2.3 s of streaming: at most one edit per second plus the final one.
    assert!(edits.len() <= 4, "{} edits", edits.len());
    // Arrival times at the fake server can be squeezed by delays in transit, so this
    // checks that edits are spread out, not their exact spacing.
    for w in edits.windows(2) {
        assert!(
            w[1].at.duration_since(w[0].at) >= Duration::from_millis(500),
            "edits bunched together"
        );
    }
}

#[test]
fn long_replies_are_split_into_several_messages() {
    let para = "lorem ipsum dolor sit amet. ".repeat(120); // ~3360 chars
    let text = format!("{para}\n\n{para}\n\n{para}");
    let llm = FakeLlm::scripted(vec![Reply::sse(openai_sse(&[&text]))]);
    let s = stack("gw-split", llm);
    s.telegram.push_text(CHAT, 1, "Ann", "long please");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.len() == 3 && m.iter().all(|m| !m.visible().is_empty())
    });
    let joined: Vec<String> = msgs.iter().map(|m| m.visible()).collect();
    assert!(joined.iter().all(|m| m.chars().count() <= 4096));
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert!(
        words(&joined.join(" ")) == words(&text),
        "the parts together are the whole reply"
    );
    let ends: Vec<String> = joined
        .iter()
        .map(|m| m.chars().rev().take(12).collect::<String>())
        .collect();
    assert!(
        joined.iter().all(|m| m.ends_with("amet.")),
        "split at sentence ends: {ends:?}"
    );
}

#[test]
fn rate_limits_and_not_modified_never_lose_the_final_text() {
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&["one ", "two ", "three"]),
        delay: Duration::from_millis(700),
        end: End::Finish,
    }]);
    let s = stack("gw-429", llm);
    s.telegram.fail_next("editMessageText", Fault::RetryAfter(1));
    s.telegram.fail_next("editMessageText", Fault::Internal);
    s.telegram.fail_next("sendChatAction", Fault::RetryAfter(1));
    s.telegram.push_text(CHAT, 1, "Ann", "go");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible() == "one two three")
    });
    assert_eq!(msgs.len(), 1);
    let statuses: Vec<u16> = s
        .telegram
        .calls_of("editMessageText")
        .iter()
        .map(|c| c.status)
        .collect();
    assert!(statuses.contains(&429) && statuses.contains(&500), "{statuses:?}");
}

#[test]
fn markdown_is_formatted_and_plain_text_stays_plain() {
    let llm = FakeLlm::scripted(vec![
        Reply::sse(openai_sse(&["Use **bold** and `code`"])),
        Reply::sse(openai_sse(&["2 * 3 < 7"])),
    ]);
    let s = stack("gw-markdown", llm);
    s.telegram.push_text(CHAT, 1, "Ann", "fmt");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.parse_mode.as_deref() == Some("HTML"))
    });
    assert_eq!(msgs[0].text, "Use <b>bold</b> and <code>code</code>");
    assert_eq!(msgs[0].visible(), "Use bold and code");
    s.telegram.push_text(CHAT, 1, "Ann", "math");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    assert_eq!(msgs[1].visible(), "2 * 3 < 7");
    assert_eq!(msgs[1].parse_mode, None);
}

#[test]
fn disallowed_chats_are_ignored_with_a_log_line() {
    let mut s = Stack::new("gw-allowed", FakeLlm::echo_openai(), &[]);
    s.write_gateway_config(json!([CHAT.to_string()]));
    s.start_gateway();
    s.telegram.push_text(999, 1, "Eve", "let me in");
    s.telegram.push_text(CHAT, 1, "Ann", "hi");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [Ann]: hi")
    });
    assert!(s.telegram.messages(999).is_empty());
    assert_eq!(s.llm.requests().len(), 1);
    s.gateway
        .as_ref()
        .unwrap()
        .wait_for("ignoring message from chat 999 (not in allowed_chats)", T);
}

#[test]
fn stop_cancels_the_reply_in_flight() {
    let llm = FakeLlm::scripted(vec![Reply::stalls_after("thinking hard")]);
    let s = stack("gw-stop", llm);
    s.telegram.push_text(CHAT, 1, "Ann", "tell me everything");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 1);
    s.telegram.push_text(CHAT, 1, "Ann", "/stop");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible().contains("Reply cancelled"))
    });
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].visible().starts_with("thinking hard"));
}

/// `/stop` is about the reply running now: it does not wait behind a file its chat sent
/// after that reply began and that is still downloading.
#[test]
fn stop_goes_ahead_of_a_file_still_downloading_in_its_chat() {
    stop_goes_ahead(CHAT, "tell me everything", None, "/stop");
}

/// In a group, `/stop` is addressed to the bot as any message is: `@bot /stop` goes ahead
/// as well.
#[test]
fn a_mentioned_stop_goes_ahead_in_a_group() {
    stop_goes_ahead(
        -1003,
        "@test_bot tell me everything",
        Some("@test_bot look"),
        "@Test_Bot /stop",
    );
}

fn stop_goes_ahead(chat: i64, ask: &str, caption: Option<&str>, stop: &str) {
    let llm = FakeLlm::scripted(vec![
        Reply::stalls_after("thinking hard"),
        Reply::sse(openai_sse(&["got the file"])),
    ]);
    let s = stack("gw-stop-ahead", llm);
    s.telegram.push_text(chat, 1, "Ann", ask);
    s.telegram.wait_chat(chat, T, |m| m.len() == 1);
    s.telegram.hold_downloads(true);
    s.telegram
        .push_file(chat, 1, "big.zip", "application/zip", b"PK\x03\x04", caption);
    s.telegram.wait_downloads(1, T);
    s.telegram.push_text(chat, 1, "Ann", stop);
    s.telegram
        .wait_chat(chat, T, |m| m[0].visible().contains("Reply cancelled"));
    assert_eq!(s.llm.requests().len(), 1, "the file is still on its way");
    s.telegram.hold_downloads(false);
    let msgs = s.telegram.wait_chat(chat, T, |m| {
        m.last().is_some_and(|m| m.visible() == "got the file")
    });
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(aegis_e2e::llm::last_content(&s.llm.requests()[1])
        .as_str()
        .unwrap()
        .contains("big.zip"));
}

#[test]
fn new_starts_a_fresh_session() {
    let s = stack("gw-new", FakeLlm::echo_openai());
    s.telegram.push_text(CHAT, 1, "Ann", "first");
    s.telegram
        .wait_chat(CHAT, T, |m| m.len() == 1 && m[0].visible().contains("first"));
    s.telegram.push_text(CHAT, 1, "Ann", "/new");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.len() == 2 && m[1].visible().contains("New conversation")
    });
    s.telegram.push_text(CHAT, 1, "Ann", "second");
    s.telegram
        .wait_chat(CHAT, T, |m| m.len() == 3 && m[2].visible().contains("second"));
    let msgs = s.llm.requests()[1].json()["messages"].as_array().unwrap().len();
    assert_eq!(msgs, 2, "system prompt and the new message only");
}

#[test]
fn gateway_kill_mid_reply_neither_loses_nor_duplicates() {
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&["part one, ", "part two, ", "part three"]),
        delay: Duration::from_millis(1500),
        end: End::Finish,
    }]);
    let mut s = stack("gw-kill", llm);
    s.telegram.push_text(CHAT, 1, "Ann", "story");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 1);
    // Mid-reply (the next delta is 1.5 s away), but not inside the instant between
    // Telegram creating the message and the gateway recording its id, which no client
    // can close (the Bot API cannot look a message up).
    std::thread::sleep(Duration::from_millis(300));
    s.gateway.as_mut().unwrap().kill9();
    // A message written while the gateway is down is not lost.
    s.telegram.push_text(CHAT, 1, "Ann", "and then?");
    s.start_gateway();
    let msgs = s.telegram.wait_chat(CHAT, Duration::from_secs(60), |m| {
        m.len() == 2 && m[0].visible() == "part one, part two, part three" && !m[1].visible().is_empty()
    });
    assert_eq!(
        msgs[0].visible(),
        "part one, part two, part three",
        "the first reply was finished in place"
    );
    assert_eq!(
        s.llm.requests().len(),
        2,
        "each user message reached the model once"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.telegram.messages(CHAT).len(), 2, "no duplicate reply");
}

#[test]
fn stream_reconnects_after_serve_restarts() {
    let mut s = stack("gw-reconnect", FakeLlm::echo_openai());
    s.telegram.push_text(CHAT, 1, "Ann", "one");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 1);
    s.restart_serve(&[]);
    s.telegram.push_text(CHAT, 1, "Ann", "two");
    s.telegram
        .wait_chat(CHAT, T, |m| m.len() == 2 && m[1].visible() == "echo: [Ann]: two");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.telegram.messages(CHAT).len(), 2);
}

#[test]
fn an_emulator_answering_at_once_and_without_chat_actions_does_not_make_it_spin() {
    let mut s = Stack::new("gw-emulator", FakeLlm::echo_openai(), &[]);
    s.telegram.answer_empty_at_once(true);
    s.telegram.without_chat_action();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    std::thread::sleep(Duration::from_secs(3));
    let polls = s.telegram.calls_of("getUpdates").len();
    assert!(polls <= 12, "{polls} polls in 3 s");
    s.telegram.push_text(CHAT, 1, "Ann", "hi");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [Ann]: hi")
    });
}

#[test]
fn unavailable_agent_is_reported_to_the_user() {
    let mut s = Stack::new("gw-unavail", FakeLlm::echo_openai(), &[]);
    s.write_gateway_config(json!(["*"]));
    let cfg = s.home.join("gateway.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["telegram"]["instance"] = json!("ghost");
    std::fs::write(&cfg, v.to_string()).unwrap();
    let p = Proc::spawn(s.gateway_command());
    p.wait_for("egress stream of ghost", T);
    s.gateway = Some(p);
    s.telegram.push_text(CHAT, 1, "Ann", "anyone?");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible().contains("unavailable"))
    });
}

#[test]
fn check_and_bad_config_report_clearly() {
    let s = Stack::new("gw-check", FakeLlm::echo_openai(), &[]);
    let cfg = s.write_gateway_config(json!(["*"]));
    // A run that died with a message read and not handed on.
    let poll = s.home.path().join("gateway/123456/poll.json");
    std::fs::create_dir_all(poll.parent().unwrap()).unwrap();
    std::fs::write(
        &poll,
        json!({"offset": 8, "pending": [[{"update_id": 7, "message": {"message_id": 1, "chat": {"id": CHAT}, "text": "hi"}}]]})
            .to_string(),
    )
    .unwrap();
    // What the inbox holds against its limit.
    let inbox = s.instance_dir().join("workspace/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("big.bin"), vec![0u8; 3 << 19]).unwrap();
    let out = s.gateway_command().arg("--check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bot: @test_bot") && stdout.contains("instance: my-agent reachable"),
        "{stdout}"
    );
    let ws = s.instance_dir().join("workspace");
    assert!(
        stdout.contains(&format!(
            "workspace: {} (files sent to the bot are saved in inbox/: 1.5 MB of its 1024 MB)",
            ws.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "state: {} (1 message read from Telegram and not yet handed on)",
            poll.display()
        )),
        "{stdout}"
    );
    // A wrong token fails the check without printing the token.
    s.client()
        .put_secret("TELEGRAM_BOT_TOKEN", "999:wrong-secret-token")
        .unwrap();
    let out = s.gateway_command().arg("--check").output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        all.contains("token rejected by getMe") && all.contains("Unauthorized"),
        "{all}"
    );
    assert!(!all.contains("wrong-secret-token"), "{all}");
    // A broken config names the file and the field.
    std::fs::write(&cfg, r#"{"telegram":{"bot_token_secret":"TELEGRAM_BOT_TOKEN"}}"#).unwrap();
    let out = s.gateway_command().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&cfg.display().to_string()) && err.contains("telegram.instance: missing"),
        "{err}"
    );
    // The environment can stand in for the file.
    std::fs::remove_file(&cfg).unwrap();
    let out = s
        .gateway_command()
        .env("TELEGRAM_BOT_TOKEN", s.telegram.token())
        .env("AEGIS_GATEWAY_INSTANCE", "my-agent")
        .env("TELEGRAM_API_URL", s.telegram.url())
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Against an upstream-style aegisd (no seq, no msg_id, a 50-frame replay on every
/// connection): replays after a stream reconnect and after a gateway restart are never
/// rendered again, and every reply lands once.
#[test]
fn old_aegisd_replays_are_never_rendered_twice() {
    use aegis_e2e::aegisd::OldAegisd;
    use aegis_e2e::proc::{command, temp_dir};
    use aegis_e2e::telegram::FakeTelegram;
    let home = temp_dir("gw-old-aegisd");
    let tg = FakeTelegram::start("77:old-aegisd-token");
    let aegisd = OldAegisd::start(
        &home.join("aegisd.sock"),
        vec![("TELEGRAM_BOT_TOKEN".into(), tg.token().into())],
    );
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent", "allowed_chats": ["*"], "api_url": tg.url()}});
    std::fs::write(home.join("gateway.json"), cfg.to_string()).unwrap();
    let gateway = || {
        let mut c = command("aegis-gateway");
        c.env("AEGIS_HOME", &home).arg("--socket").arg(&aegisd.socket);
        let p = Proc::spawn(c);
        p.wait_for("egress stream of my-agent connected", T);
        p
    };
    let mut gw = gateway();
    tg.push_text(CHAT, 1, "Ann", "one");
    tg.wait_chat(CHAT, T, |m| m.len() == 1 && m[0].visible() == "echo: one");
    aegisd.drop_streams();
    gw.wait_for("egress stream of my-agent broke", T);
    tg.push_text(CHAT, 1, "Ann", "two");
    tg.wait_chat(CHAT, T, |m| m.len() == 2 && m[1].visible() == "echo: two");
    std::thread::sleep(Duration::from_secs(3)); // the reply is saved, then the gateway dies
    gw.kill9();
    let _gw = gateway();
    tg.push_text(CHAT, 1, "Ann", "three");
    let msgs = tg.wait_chat(CHAT, T, |m| m.len() >= 3 && m[2].visible() == "echo: three");
    std::thread::sleep(Duration::from_millis(800));
    let texts: Vec<String> = tg.messages(CHAT).iter().map(|m| m.visible()).collect();
    assert_eq!(texts, vec!["echo: one", "echo: two", "echo: three"], "{msgs:?}");
    assert_eq!(aegisd.received().len(), 3, "each message delivered once");
}

/// The list form: two bots, each in front of its own instance, in one gateway.
#[test]
fn two_bots_in_one_gateway_each_reach_their_own_instance() {
    use aegis_e2e::telegram::FakeTelegram;
    let mut s = Stack::new("gw-two-bots", FakeLlm::echo_openai(), &[]);
    let other_llm = FakeLlm::with(|_| Reply::sse(openai_sse(&["from the other agent"])));
    let c = s.client();
    let body =
        json!({"name": "other", "secrets": ["OPENAI_API_KEY"], "env": {"OPENAI_BASE_URL": other_llm.url()}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    let tg2 = FakeTelegram::start("222:second-bot-token");
    c.put_secret("SECOND_BOT", tg2.token()).unwrap();
    let cfg = json!({"telegram": [
        {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent", "allowed_chats": ["*"], "api_url": s.telegram.url()},
        {"bot_token_secret": "SECOND_BOT", "instance": "other", "allowed_chats": ["*"], "api_url": tg2.url()}
    ]});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    let p = Proc::spawn(s.gateway_command());
    p.wait_for("egress stream of other connected", T);
    s.gateway = Some(p);
    s.telegram.push_text(CHAT, 1, "Ann", "hi one");
    tg2.push_text(CHAT, 1, "Bob", "hi two");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.len() == 1 && m[0].visible() == "echo: [Ann]: hi one"
    });
    tg2.wait_chat(CHAT, T, |m| {
        m.len() == 1 && m[0].visible() == "from the other agent"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.telegram.messages(CHAT).len(), 1);
    assert_eq!(tg2.messages(CHAT).len(), 1);
}

#[test]
fn in_groups_the_bot_answers_mentions_replies_and_commands_addressed_to_it() {
    const GROUP: i64 = -1001;
    let s = stack("gw-groups", FakeLlm::echo_openai());
    let from = |name: &str, id: i64| json!({"id": id, "is_bot": false, "first_name": name});
    let group = json!({"id": GROUP, "type": "supergroup", "title": "Team"});
    let say = |text: &str| {
        s.telegram
            .push_message(json!({"chat": group, "from": from("Ann", 7), "text": text}))
    };
    say("hello everyone");
    say("/new@other_bot");
    let asked = say("@Test_Bot what is up?");
    let msgs = s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: what is up?")
    });
    assert_eq!(
        msgs.len(),
        1,
        "only the mention was answered, without the mention in it"
    );
    let sent = s.telegram.calls_of("sendMessage");
    assert_eq!(
        sent[0].body["reply_parameters"]["message_id"], asked,
        "the answer replies to the question"
    );
    // A reply to one of the bot's messages is addressed to it too.
    let bot_message = json!({"message_id": msgs[0].id, "chat": group, "from": {"id": 123456, "is_bot": true, "first_name": "Test Bot"}, "text": msgs[0].text});
    s.telegram.push_message(
        json!({"chat": group, "from": from("Bob", 8), "text": "and you?", "reply_to_message": bot_message}),
    );
    // (The model sees what it answers: its own earlier message, quoted.)
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter()
            .any(|m| m.visible() == "echo: [Bob]: > you: echo: [Ann]: what is up?\nand you?")
    });
    say("/new@test_bot");
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| m.visible().contains("New conversation"))
    });
    // Code sent with a mention keeps its lines and indents.
    say("@test_bot fix this:\n```\nfn main() {\n    run();\n}\n```");
    s.telegram
        .wait_chat(GROUP, T, |m| m.iter().any(|m| m.visible().contains("run();")));
    // A command of the bot's menu without `@bot` (as Telegram sends one picked from the
    // menu where the bot is the only one) is the bot's; another bare command is not.
    say("/help");
    say("/new");
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter()
            .filter(|m| m.visible().contains("New conversation"))
            .count()
            == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        questions(&s),
        [
            "[Ann]: what is up?",
            "[Bob]: > you: echo: [Ann]: what is up?\nand you?",
            "[Ann]: fix this:\n```\nfn main() {\n    run();\n}\n```"
        ],
        "nothing else reached the agent"
    );
}

/// What the model was asked, message by message (the last user text of each request).
fn questions(s: &Stack) -> Vec<String> {
    let requests = s.llm.requests();
    requests.iter().map(aegis_e2e::llm::last_user_text).collect()
}

/// A bot with collectible usernames (Bot API 10.5 lists them in `getMe`'s
/// `active_usernames`) is mentioned by any of them in a group, and commands addressed to
/// any of them are its own.
#[test]
fn in_groups_the_bot_answers_to_every_active_username() {
    const GROUP: i64 = -1002;
    let mut s = Stack::new("gw-usernames", FakeLlm::echo_openai(), &[]);
    s.telegram.add_usernames(&["AegisHelperBot"]);
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    let group = json!({"id": GROUP, "type": "supergroup", "title": "Team"});
    let say = |text: &str| {
        s.telegram.push_message(
            json!({"chat": group, "from": {"id": 7, "is_bot": false, "first_name": "Ann"}, "text": text}),
        )
    };
    say("@aegishelperbotany is someone else");
    say("@AegisHelperBot what is up?");
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: what is up?")
    });
    say("/new@aegishelperbot");
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| m.visible().contains("New conversation"))
    });
    say("@test_bot and @AegisHelperBot both?");
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: and both?")
    });
    assert_eq!(
        questions(&s),
        ["[Ann]: what is up?", "[Ann]: and both?"],
        "the mentions are taken out, and a longer name is someone else"
    );
}

/// Topics (a forum supergroup's, and a private chat's with topics on, Bot API 9.3): each
/// answer, its draft, typing and the bot's notices go to the topic the message came from,
/// and each topic is a conversation of its own.
#[test]
fn replies_in_topics_go_to_their_topic_and_each_topic_is_its_own_conversation() {
    const FORUM: i64 = -1003;
    let mut s = Stack::new("gw-topics", FakeLlm::echo_openai(), &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "api_url": s.telegram.url(), "group_mode": "all"}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    s.telegram.enable_drafts();
    s.start_gateway();
    let ann = json!({"id": 7, "is_bot": false, "first_name": "Ann"});
    let forum = json!({"id": FORUM, "type": "supergroup", "title": "Ops", "is_forum": true});
    let private = json!({"id": CHAT, "type": "private", "first_name": "Ann"});
    let say = |chat: &Value, topic: Option<i64>, text: &str| {
        let mut m = json!({"chat": chat, "from": ann, "text": text});
        if let Some(t) = topic {
            m["message_thread_id"] = json!(t);
            m["is_topic_message"] = json!(true);
        }
        s.telegram.push_message(m);
    };
    let answered = |chat: i64, text: &str| {
        let want = format!("echo: [Ann]: {text}");
        let msgs = s
            .telegram
            .wait_chat(chat, T, |m| m.iter().any(|m| m.visible() == want));
        msgs.into_iter().find(|m| m.visible() == want).unwrap().thread
    };
    // The LLM request that carried `text`: how many user turns its history had.
    let turns = |text: &str| {
        let reqs = s.llm.requests();
        let req = reqs
            .iter()
            .find(|r| aegis_e2e::llm::last_user_text(r).ends_with(text))
            .unwrap();
        let messages = req.json()["messages"].as_array().unwrap().clone();
        messages.iter().filter(|m| m["role"] == "user").count()
    };

    say(&forum, Some(5), "alpha");
    assert_eq!(answered(FORUM, "alpha"), Some(5));
    say(&forum, Some(9), "beta");
    assert_eq!(answered(FORUM, "beta"), Some(9));
    say(&forum, None, "general");
    assert_eq!(
        answered(FORUM, "general"),
        None,
        "the General topic takes no thread id"
    );
    say(&forum, Some(5), "alpha again");
    assert_eq!(answered(FORUM, "alpha again"), Some(5));
    assert_eq!(
        (turns("beta"), turns("general"), turns("alpha again")),
        (1, 1, 2),
        "one conversation per topic"
    );
    // /new in a topic: answered there, and only that topic starts afresh.
    say(&forum, Some(5), "/new");
    let notice = s.telegram.wait_chat(FORUM, T, |m| {
        m.iter().any(|m| m.visible().contains("New conversation"))
    });
    let notice = notice
        .iter()
        .find(|m| m.visible().contains("New conversation"))
        .unwrap();
    assert_eq!(notice.thread, Some(5));
    say(&forum, Some(5), "alpha fresh");
    assert_eq!(answered(FORUM, "alpha fresh"), Some(5));
    say(&forum, Some(9), "beta again");
    assert_eq!(answered(FORUM, "beta again"), Some(9));
    assert_eq!((turns("alpha fresh"), turns("beta again")), (1, 2));

    // A topic deleted while its message was on its way: the answer lands in the chat
    // itself rather than nowhere.
    s.telegram.delete_topic(FORUM, 77);
    say(&forum, Some(77), "gone topic");
    assert_eq!(answered(FORUM, "gone topic"), None);

    // A private chat with topics on: the draft streams in the topic too.
    say(&private, Some(11), "hi in a topic");
    assert_eq!(answered(CHAT, "hi in a topic"), Some(11));
    let threads = |method: &str| -> Vec<Option<i64>> {
        s.telegram
            .calls_of(method)
            .iter()
            .filter(|c| c.body["chat_id"] == json!(CHAT))
            .map(|c| c.body["message_thread_id"].as_i64())
            .collect()
    };
    let drafts = threads("sendMessageDraft");
    assert!(
        !drafts.is_empty() && drafts.iter().all(|t| *t == Some(11)),
        "{drafts:?}"
    );
    let typing = threads("sendChatAction");
    assert!(
        !typing.is_empty() && typing.iter().all(|t| *t == Some(11)),
        "{typing:?}"
    );
    // Nothing was refused for a wrong thread but the deleted topic's.
    let refused: Vec<_> = s
        .telegram
        .calls()
        .into_iter()
        .filter(|c| c.status == 400)
        .map(|c| (c.method, c.body["message_thread_id"].clone()))
        .collect();
    assert!(
        refused.iter().all(|(_, t)| *t == json!(77)) && refused.iter().any(|(m, _)| m == "sendMessage"),
        "{refused:?}"
    );
}

/// A group becomes a supergroup with a new id when topics are turned on: the supergroup is
/// answered as `allowed_chats` allowed the group (also after a restart), and a reply on its
/// way to the group when that happened reaches the supergroup.
#[test]
fn a_group_that_became_a_supergroup_is_still_answered() {
    use aegis_e2e::llm::{last_user_text, End};
    const OLD: i64 = -555;
    const NEW: i64 = -1_005_550;
    const OLD2: i64 = -556;
    const NEW2: i64 = -1_005_560;
    let gate = aegis_e2e::llm::Gate::default();
    let held = gate.clone();
    let llm = FakeLlm::with(move |req| {
        let text = last_user_text(req);
        if text.contains("halfway") {
            return Reply::held(&["echo: "], &held, &[&text]);
        }
        Reply::Sse {
            pieces: openai_sse(&["echo: ", &text]),
            delay: Duration::from_millis(if text.contains("slow") { 1500 } else { 0 }),
            end: End::Finish,
        }
    });
    let mut s = Stack::new("gw-migrate", llm, &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": [OLD, OLD2], "api_url": s.telegram.url(), "group_mode": "all"}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    s.start_gateway();
    let answered = |tg: &aegis_e2e::telegram::FakeTelegram, chat: i64, text: &str| {
        let want = format!("echo: [Ann]: {text}");
        tg.wait_chat(chat, T, |m| m.iter().any(|m| m.visible() == want));
    };
    s.telegram.push_text(OLD, 7, "Ann", "before");
    answered(&s.telegram, OLD, "before");
    // The group turns into a supergroup while a reply is being written.
    s.telegram.push_text(OLD, 7, "Ann", "slow one");
    s.llm.wait_request(2, T);
    s.telegram.migrate_group(OLD, NEW);
    answered(&s.telegram, NEW, "slow one");
    s.telegram.push_text(NEW, 7, "Ann", "after");
    answered(&s.telegram, NEW, "after");
    // A reply half written when the group moves: its message stays behind in the old
    // group, where it cannot be edited any more, so the whole text comes anew.
    s.telegram.push_text(OLD2, 7, "Ann", "halfway");
    s.telegram.wait_chat(OLD2, T, |m| !m.is_empty());
    s.telegram.migrate_group(OLD2, NEW2);
    gate.open();
    answered(&s.telegram, NEW2, "halfway");
    assert_eq!(s.telegram.messages(NEW2).len(), 1);
    // Known after a restart too; a chat nobody allowed still is not answered.
    s.gateway.take();
    s.start_gateway();
    s.telegram.push_text(-777, 7, "Eve", "let me in");
    s.telegram.push_text(NEW, 7, "Ann", "after a restart");
    answered(&s.telegram, NEW, "after a restart");
    assert!(s.telegram.messages(-777).is_empty());
    assert_eq!(s.telegram.messages(OLD).len(), 1, "only the answer from before");
}

/// Someone deletes the message a reply is being written into: the text is not lost, it
/// arrives in a new message, once.
#[test]
fn a_reply_whose_message_is_deleted_midway_arrives_anew() {
    let gate = aegis_e2e::llm::Gate::default();
    let texts: Vec<String> = (0..8).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let llm = FakeLlm::scripted(vec![
        Reply::held(&refs[..2], &gate, &refs[2..]),
        Reply::sse(openai_sse(&["ok"])),
    ]);
    let s = stack("gw-deleted", llm);
    s.telegram.push_text(CHAT, 7, "Ann", "count");
    let first = s.telegram.wait_chat(CHAT, T, |m| !m.is_empty())[0].id;
    s.telegram.delete_message(CHAT, first);
    gate.open();
    let full = texts.concat();
    let msgs = s
        .telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == full.trim_end()));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_ne!(msgs[0].id, first);
    // The reply is finished, not stuck: the next one is answered as usual.
    s.telegram.push_text(CHAT, 7, "Ann", "again");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
}

/// A reply brings what it answers: "@bot why?" under a member's message is about that
/// message (quoted, or only the part the user quoted), "@bot what is this?" under a photo
/// about that photo. A topic's first message, which every message in a topic replies to,
/// is not quoted.
#[test]
fn a_reply_brings_what_it_answers_to_the_model() {
    const GROUP: i64 = -1004;
    let s = stack("gw-replies", FakeLlm::echo_openai());
    let group = json!({"id": GROUP, "type": "supergroup", "title": "Team", "is_forum": true});
    let from = |name: &str, id: i64| json!({"id": id, "is_bot": false, "first_name": name});
    let bob_said = json!({"message_id": 50, "chat": group, "from": from("Bob", 8),
        "text": "the build failed at step 3\nsee the log"});
    let ask = |extra: Value| {
        let mut m = json!({"chat": group, "from": from("Ann", 7), "text": "@test_bot why?"});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        s.telegram.push_message(m);
    };
    let last_request = |n: usize| aegis_e2e::llm::last_content(&s.llm.wait_request(n, T));
    ask(json!({"reply_to_message": bob_said}));
    assert_eq!(
        last_request(1),
        "[Ann]: > Bob: the build failed at step 3\n> see the log\nwhy?"
    );
    ask(json!({"reply_to_message": bob_said, "quote": {"text": "step 3", "position": 20}}));
    assert_eq!(last_request(2), "[Ann]: > Bob: step 3\nwhy?");
    // Under a photo: the photo goes to the model, its caption quoted.
    let photo = s.telegram.photo_sizes(&[jpeg(20_000, 9)]);
    let pic = json!({"message_id": 51, "chat": group, "from": from("Bob", 8), "photo": photo,
        "caption": "our rack"});
    ask(json!({"reply_to_message": pic, "text": "@test_bot what is this?"}));
    let content = last_request(3);
    assert!(content[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("[Ann]: > Bob: our rack\nwhat is this?\n[photo saved in the workspace as inbox/photo-"));
    assert!(content[1]["image_url"]["url"]
        .as_str()
        .unwrap()
        .starts_with("data:image/jpeg;base64,"));
    // In a topic, the topic's first message is no reply of substance.
    let root = json!({"message_id": 60, "chat": group, "from": from("Bob", 8),
        "forum_topic_created": {"name": "Builds", "icon_color": 7322096}});
    ask(json!({"reply_to_message": root, "message_thread_id": 60, "is_topic_message": true}));
    assert_eq!(last_request(4), "[Ann]: why?");
    // Under something shared without words: what it shares.
    let pin = json!({"message_id": 52, "chat": group, "from": from("Bob", 8),
        "location": {"latitude": 52.52, "longitude": 13.405}});
    ask(json!({"reply_to_message": pin, "text": "@test_bot how far is it?"}));
    assert_eq!(
        last_request(5),
        "[Ann]: > Bob: [location: 52.52, 13.405]\nhow far is it?"
    );
    // A message of another chat (Telegram's "reply in another chat"): its words come as
    // the part quoted, its author as its origin.
    let news = json!({"type": "channel", "date": 1, "message_id": 9,
        "chat": {"id": -1009, "type": "channel", "title": "Daily News"}});
    ask(json!({"external_reply": {"origin": news}, "quote": {"text": "rates rise 0.25%", "position": 0}}));
    assert_eq!(
        last_request(6),
        "[Ann]: > the channel Daily News (in another chat): rates rise 0.25%\nwhy?"
    );
    let poll = json!({"id": "p", "question": "Lunch?", "options": [{"text": "Pizza", "voter_count": 2},
        {"text": "Sushi", "voter_count": 1}], "total_voter_count": 3, "is_closed": false,
        "is_anonymous": true, "type": "regular", "allows_multiple_answers": false});
    ask(json!({"external_reply": {"origin": news, "poll": poll}}));
    assert_eq!(
        last_request(7),
        "[Ann]: > the channel Daily News (in another chat): [poll: Lunch? — Pizza: 2 / Sushi: 1 (3 voters)]\nwhy?"
    );
    ask(json!({"external_reply": {"origin": news, "photo": photo}}));
    assert_eq!(
        last_request(8),
        "[Ann]: > the channel Daily News (in another chat): [a message the agent cannot see]\nwhy?"
    );
}

#[test]
fn group_mode_all_answers_every_group_message() {
    const GROUP: i64 = -1002;
    let mut s = Stack::new("gw-groups-all", FakeLlm::echo_openai(), &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "api_url": s.telegram.url(), "group_mode": "all"}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    s.start_gateway();
    s.telegram.push_text(GROUP, 7, "Ann", "hello everyone");
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: hello everyone")
    });
}

#[test]
fn start_greets_and_the_command_menu_is_set() {
    let s = stack("gw-start", FakeLlm::echo_openai());
    s.telegram.push_text(CHAT, 7, "Ann", "/start");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible().starts_with("👋 Hi!")));
    let menu = s.telegram.calls_of("setMyCommands");
    assert_eq!(menu.len(), 1);
    let names: Vec<&str> = menu[0].body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new", "stop", "usage", "skills"]);
    assert!(
        s.llm.requests().is_empty(),
        "/start is not a question for the agent"
    );
}

/// The commands the agent answers of its own (`/model`, `/tasks`, a skill here) join the bot's menu
/// after the gateway's, stay there across a gateway restart, and the skill leaves it with
/// the skill; a menu Telegram refuses as too long is set again with fewer of them.
#[test]
fn the_agents_skills_join_the_command_menu() {
    // Without the shell whether or not this machine can sandbox (`/jobs` comes with it).
    let mut s = Stack::with_env(
        "gw-menu",
        FakeLlm::echo_openai(),
        &[],
        &[("AEGIS_TOOLS", "all,-shell")],
    );
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    let skills = s.instance_dir().join("workspace/.aegis/skills");
    let skill = |name: &str| {
        std::fs::create_dir_all(skills.join(name)).unwrap();
        std::fs::write(
            skills.join(format!("{name}/SKILL.md")),
            format!("---\nname: {name}\ndescription: The {name} skill\n---\nDo it.\n"),
        )
        .unwrap();
    };
    skill("csv-report");
    // A skill only the model uses is no command.
    std::fs::create_dir_all(skills.join("house-style")).unwrap();
    std::fs::write(
        skills.join("house-style/SKILL.md"),
        "---\nname: house-style\ndescription: How we write\nuser-invocable: false\n---\nShort.\n",
    )
    .unwrap();
    let own = ["new", "stop", "usage", "skills"];
    let with = |extra: &[&str]| -> Vec<String> { own.iter().chain(extra).map(|c| c.to_string()).collect() };
    let wait_menu = |s: &Stack, want: &[String]| {
        let deadline = std::time::Instant::now() + T;
        while s.telegram.menu() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "menu {:?}",
                s.telegram.menu()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // The gateway's own at its start (its poller sets them as it begins, which may come
    // after the stack is ready).
    wait_menu(&s, &with(&[]));
    s.telegram.push_text(CHAT, 7, "Ann", "hello");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible().starts_with("echo:")));
    wait_menu(&s, &with(&["model", "tasks", "memory", "csv_report"]));
    let set = s.telegram.calls_of("setMyCommands");
    assert_eq!(set.len(), 2, "set at the start, then once for the agent's");
    assert_eq!(set[1].body["commands"][7]["description"], "The csv-report skill");
    // In a group, the skill's command picked from the menu (no `@bot`) is the bot's.
    const GROUP: i64 = -1003;
    s.telegram.push_message(
        json!({"chat": {"id": GROUP, "type": "supergroup", "title": "Team"},
        "from": {"id": 7, "is_bot": false, "first_name": "Ann"}, "text": "/csv_report sales.csv"}),
    );
    s.telegram.wait_chat(GROUP, T, |m| {
        m.iter().any(|m| {
            m.visible()
                .starts_with("echo: [Ann]: /csv_report sales.csv\n\n[The user asks for the skill csv-report")
        })
    });

    // After a restart the menu is whole from the start.
    s.gateway.take();
    s.start_gateway();
    let deadline = std::time::Instant::now() + T;
    while s.telegram.calls_of("setMyCommands").len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no menu after the restart");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        s.telegram.menu(),
        with(&["model", "tasks", "memory", "csv_report"])
    );

    // More skills than this Telegram takes: halved until it does.
    for n in 0..6 {
        skill(&format!("extra-{n}"));
    }
    s.telegram.cap_menu(10);
    s.telegram.push_text(CHAT, 8, "Ann", "more");
    wait_menu(&s, &with(&["model", "tasks", "memory", "csv_report", "extra_0"]));

    // The skills gone: the gateway's own again, and `/model`.
    std::fs::remove_dir_all(&skills).unwrap();
    s.telegram.push_text(CHAT, 9, "Ann", "less");
    wait_menu(&s, &with(&["model", "tasks", "memory"]));
}

/// `/usage` is answered by the agent from its record of what the model's requests cost,
/// without asking the model, and stays out of the conversation.
#[test]
fn usage_is_answered_from_the_record_without_the_model() {
    use aegis_e2e::llm::with_openai_usage;
    let llm = FakeLlm::with(|_| Reply::sse(with_openai_usage(openai_sse(&["hello"]), 1200, 1024, 5)));
    let s = stack("gw-usage", llm);
    s.telegram.push_text(CHAT, 7, "Ann", "hi");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "hello"));
    s.telegram.push_text(CHAT, 8, "Ann", "/usage");
    let shown = s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible().starts_with("Model use"))
    });
    let answer = shown
        .iter()
        .find(|m| m.visible().starts_with("Model use"))
        .unwrap()
        .visible();
    assert!(
        answer.contains("today: 1 request, 1,200 input tokens (85 % from the cache), 5 output"),
        "{answer}"
    );
    s.telegram.push_text(CHAT, 9, "Ann", "and now?");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().filter(|m| m.visible() == "hello").count() == 2
    });
    let requests = s.llm.requests();
    assert_eq!(requests.len(), 2, "/usage is not a question for the model");
    assert!(
        !requests[1].json().to_string().contains("/usage"),
        "nor part of the conversation"
    );
}

#[test]
fn a_wrong_token_ends_the_gateway_and_a_second_poller_is_waited_out() {
    let mut s = Stack::new("gw-token", FakeLlm::echo_openai(), &[]);
    s.write_gateway_config(json!(["*"]));
    // 409 once: logged clearly, retried, and the bot works.
    s.telegram.fail_next("getUpdates", Fault::Conflict);
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "hi");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "echo: [Ann]: hi"));
    s.gateway
        .as_ref()
        .unwrap()
        .wait_for("another program is polling this bot", T);
    // A token Telegram does not know: exit 2 with a message that says so.
    s.client()
        .put_secret("TELEGRAM_BOT_TOKEN", "999:wrong-token")
        .unwrap();
    let out = s.gateway_command().output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the bot token is wrong"), "{err}");
    assert!(
        !err.contains("wrong-token"),
        "the token itself is never printed: {err}"
    );
}

#[test]
fn private_replies_stream_as_native_drafts_and_end_in_one_message() {
    let texts: Vec<String> = (0..12).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&refs),
        delay: Duration::from_millis(250),
        end: End::Finish,
    }]);
    let mut s = Stack::new("gw-drafts", llm, &[]);
    s.telegram.enable_drafts();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "count");
    let full: String = texts.concat();
    let msgs = s.telegram.wait_chat(CHAT, T, |m| !m.is_empty());
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].visible(), full.trim_end());
    assert_eq!(msgs[0].edits, 0, "no edits: the draft carried the streaming");
    let drafts = s.telegram.calls_of("sendMessageDraft");
    assert!(
        drafts.len() >= 3,
        "the draft grew as text arrived: {}",
        drafts.len()
    );
    assert_eq!(drafts[0].body["text"], "", "Thinking… first");
    let id = drafts[0].body["draft_id"].as_i64().unwrap();
    assert!(
        id != 0 && drafts.iter().all(|d| d.body["draft_id"] == id),
        "one draft id per reply"
    );
    assert!(s.telegram.calls_of("editMessageText").is_empty());
    assert_eq!(
        s.telegram.draft(CHAT),
        None,
        "the final message replaced the draft"
    );
    println!(
        "draft mode: {} sendMessageDraft + {} sendMessage for a 3 s reply",
        drafts.len(),
        s.telegram.calls_of("sendMessage").len()
    );
}

/// The pieces of a reply with formatting, streamed slowly enough to be seen growing.
fn formatted_reply() -> Reply {
    Reply::Sse {
        pieces: openai_sse(&[
            "Here is **bold",
            " text** and",
            " `code`",
            " to",
            " see",
            " it end.",
        ]),
        delay: Duration::from_millis(400),
        end: End::Finish,
    }
}

/// A reply looks as it will end while it streams (bold as bold, code as code), not like
/// Markdown until its last edit; a draft whose formatting Telegram refuses goes plain,
/// and the drafts go on.
#[test]
fn a_draft_is_formatted_as_the_reply_streams() {
    let llm = FakeLlm::scripted(vec![formatted_reply(), formatted_reply()]);
    let mut s = Stack::new("gw-formatted-drafts", llm, &[]);
    s.telegram.enable_drafts();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "show me");
    let end = "Here is bold text and code to see it end.";
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 1);
    let drafts = s.telegram.calls_of("sendMessageDraft");
    let formatted: Vec<&str> = drafts
        .iter()
        .filter(|d| d.body["parse_mode"] == "HTML" && d.status == 200)
        .map(|d| d.body["text"].as_str().unwrap())
        .collect();
    assert!(
        formatted
            .iter()
            .any(|t| t.starts_with("Here is <b>bold text</b> and") && !t.contains("end.")),
        "a draft before the end showed bold as bold: {drafts:#?}"
    );
    assert!(drafts.iter().all(|d| d.status == 200), "{drafts:#?}");

    // Telegram refuses the next formatted draft.
    let before = drafts.len();
    s.telegram.fail_next("sendMessageDraft", Fault::BadEntities);
    s.telegram.push_text(CHAT, 7, "Ann", "again");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    assert_eq!(msgs[1].visible(), end);
    let drafts = &s.telegram.calls_of("sendMessageDraft")[before..];
    let refused = drafts
        .iter()
        .position(|d| d.status == 400)
        .expect("the fault was met");
    assert_eq!(drafts[refused].body["parse_mode"], "HTML");
    let plain = &drafts[refused + 1];
    assert!(
        plain.body.get("parse_mode").is_none() && plain.status == 200,
        "the refused draft went again plain: {plain:#?}"
    );
    assert!(plain.body["text"].as_str().unwrap().contains("**bold"));
    assert!(
        drafts[refused + 2..]
            .iter()
            .any(|d| d.body["parse_mode"] == "HTML" && d.status == 200),
        "drafts went on, formatted: {drafts:#?}"
    );
    assert!(
        s.telegram.calls_of("editMessageText").is_empty(),
        "no fallback to edits"
    );
}

/// The same with edits (a Bot API without drafts): each edit is formatted, not only the last.
#[test]
fn a_streaming_edit_is_formatted_before_the_reply_ends() {
    let s = stack("gw-formatted-edits", FakeLlm::scripted(vec![formatted_reply()]));
    s.telegram.push_text(CHAT, 7, "Ann", "show me");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.first().is_some_and(|m| m.visible().ends_with("end."))
    });
    assert_eq!(msgs.len(), 1);
    let shown: Vec<(String, Value)> = s
        .telegram
        .calls()
        .into_iter()
        .filter(|c| c.method == "sendMessage" || c.method == "editMessageText")
        .map(|c| {
            (
                c.body["text"].as_str().unwrap().to_string(),
                c.body["parse_mode"].clone(),
            )
        })
        .collect();
    assert!(
        shown
            .iter()
            .any(|(t, mode)| t.starts_with("Here is <b>bold text</b> and")
                && !t.contains("end.")
                && mode == "HTML"),
        "an edit before the end showed bold as bold: {shown:#?}"
    );
}

/// A long program in a reply goes over several messages, each a code block of its own,
/// in its language (the block is closed at the cut and opened again), and the words after
/// it are words, not code.
#[test]
fn a_code_block_longer_than_a_message_stays_code_in_every_message() {
    let code: Vec<String> = (0..300)
        .map(|i| format!("    total += {i}  # step {i}"))
        .collect();
    let text = format!(
        "Here it is:\n\n```python\ndef f():\n{}\n```\n\nRun it with **python3**.",
        code.join("\n")
    );
    let pieces: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
    let llm = FakeLlm::scripted(vec![Reply::sse(openai_sse(
        &pieces.iter().map(String::as_str).collect::<Vec<_>>(),
    ))]);
    let s = stack("gw-long-code", llm);
    s.telegram.push_text(CHAT, 7, "Ann", "write it");
    // Every line of code in exactly one message, once each message had its last edit
    // (a part's final edit may come after the next part is sent).
    let each_once = |m: &[aegis_e2e::telegram::Msg]| {
        let shown: String = m.iter().map(|m| m.visible() + "\n").collect();
        code.iter().all(|l| shown.matches(&format!("{l}\n")).count() == 1)
    };
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.len() == 3 && m[2].visible().ends_with("Run it with python3.") && each_once(m)
    });
    assert!(each_once(&msgs), "{msgs:#?}");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.parse_mode.as_deref(), Some("HTML"), "message {i}");
        let start = if i == 0 { "Here it is:\n\n<pre>" } else { "<pre>" };
        assert!(
            m.text
                .starts_with(&format!("{start}<code class=\"language-python\">")),
            "message {i}: {:.80}",
            m.text
        );
    }
    assert!(msgs[2]
        .text
        .ends_with("</code></pre>\n\nRun it with <b>python3</b>."));
}

/// A reasoning model through the whole stack: its thoughts stream to the gateway, which
/// shows Telegram's "Thinking…" for them and never their text; the message is the answer.
#[test]
fn a_reasoning_models_thoughts_show_as_thinking_and_never_reach_the_chat() {
    let thoughts: Vec<String> = (0..6).map(|i| format!("secret step {i}. ")).collect();
    let refs: Vec<&str> = thoughts.iter().map(String::as_str).collect();
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: reasoning_sse("reasoning", &refs, &["Par", "is."]),
        delay: Duration::from_millis(250),
        end: End::Finish,
    }]);
    let mut s = Stack::new("gw-reasoning", llm, &[]);
    s.telegram.enable_drafts();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "Capital of France?");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| !m.is_empty());
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].visible(), "Paris.");
    let drafts = s.telegram.calls_of("sendMessageDraft");
    assert_eq!(drafts[0].body["text"], "", "Thinking… first");
    for d in &drafts {
        let text = d.body["text"].as_str().unwrap();
        assert!("Paris.".starts_with(text), "a draft showed {text:?}");
    }
    assert!(!s.telegram.calls_of("sendChatAction").is_empty());
}

#[test]
fn a_bot_api_without_drafts_streams_with_edits() {
    // The fake knows no sendMessageDraft unless asked: the first reply's draft is
    // refused, and that reply and the next stream by send + edit.
    let s = stack("gw-nodrafts", FakeLlm::echo_openai());
    s.telegram.push_text(CHAT, 7, "Ann", "one");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "echo: [Ann]: one"));
    s.telegram.push_text(CHAT, 7, "Ann", "two");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "echo: [Ann]: two"));
    assert_eq!(
        s.telegram.calls_of("sendMessageDraft").len(),
        1,
        "asked once, then remembered"
    );
}

#[test]
fn per_instance_mode_reloads_its_config_live_and_exits_when_the_instance_is_deleted() {
    let s = Stack::new("gw-per-instance", FakeLlm::echo_openai(), &[]);
    let dir = s.home.join("kits/my-agent");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |allowed: serde_json::Value| {
        let cfg = json!({"telegram": {"bot_token_env": "MY_BOT_TOKEN", "allowed_chats": allowed, "api_url": s.telegram.url()}});
        // Written whole and renamed into place, as editors and tools do.
        std::fs::write(dir.join("gateway.json.tmp"), cfg.to_string()).unwrap();
        std::fs::rename(dir.join("gateway.json.tmp"), dir.join("gateway.json")).unwrap();
    };
    write(json!([1]));
    let mut cmd = s.gateway_command();
    cmd.env("AEGIS_INSTANCE", "my-agent")
        .env("MY_BOT_TOKEN", s.telegram.token());
    let mut gw = Proc::spawn(cmd);
    gw.wait_for("egress stream of my-agent connected", T);
    s.telegram.push_text(CHAT, 7, "Ann", "first");
    gw.wait_for(&format!("ignoring message from chat {CHAT}"), T);
    // Allow the chat: applied without a restart by hand, within 5 s.
    write(json!(["*"]));
    gw.wait_for("the config file changed: reloading", T);
    s.telegram.push_text(CHAT, 7, "Ann", "second");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: second")
    });
    // SIGHUP reloads too.
    std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    gw.wait_for("SIGHUP: reloading", T);
    // The third start (first run, file change, SIGHUP) is up before the next change.
    let deadline = std::time::Instant::now() + T;
    while gw.log().matches("aegis-gateway running").count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no restart after SIGHUP: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // the watcher takes its first look
                                                    // A broken config is refused and the running one kept.
    std::fs::write(dir.join("gateway.json"), "{broken").unwrap();
    gw.wait_for("the new config is not valid", T);
    // The instance is deleted: the gateway leaves with status 0 ("do not restart").
    s.client()
        .request("DELETE", "/v1/instances/my-agent", None)
        .unwrap();
    let status = gw.wait_exit(Duration::from_secs(20)).expect("the gateway exits");
    assert_eq!(status.code(), Some(0));
    assert!(gw.log().contains("instance my-agent was deleted"), "{}", gw.log());
}

#[test]
fn serve_runs_a_gateway_per_instance_restarts_it_and_stops_it_with_the_instance() {
    let s = Stack::new("gw-daemons", FakeLlm::echo_openai(), &[]);
    // The per-instance config first: without it serve starts no daemon (like `up`).
    let dir = s.home.join("kits/team");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = json!({"telegram": {"allowed_chats": ["*"], "api_url": s.telegram.url()}});
    std::fs::write(dir.join("gateway.json"), cfg.to_string()).unwrap();
    let c = s.client();
    let body = json!({"name": "team", "kit": "agent", "secrets": ["OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN"],
        "env": {"OPENAI_BASE_URL": s.llm.url()}});
    c.request("POST", "/v1/instances", Some(&body)).unwrap();
    s.serve.wait_for("team: daemon aegis-gateway started", T);
    s.telegram.push_text(CHAT, 7, "Ann", "hello team");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: hello team")
    });
    // A crash is followed by a restart.
    let pid_of = |log: &str| -> i32 {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("team: daemon aegis-gateway started"))
            .unwrap();
        line.rsplit("pid ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap()
    };
    let first = pid_of(&s.serve.log());
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    s.serve.wait_for("team: daemon aegis-gateway exited", T);
    let deadline = std::time::Instant::now() + T;
    while pid_of(&s.serve.log()) == first {
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted: {}",
            s.serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = pid_of(&s.serve.log());
    s.telegram.push_text(CHAT, 7, "Ann", "still there?");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Ann]: still there?")
    });
    // Deleting the instance stops its gateway.
    c.request("DELETE", "/v1/instances/team", None).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{second}")).exists(),
        "the daemon outlived its instance"
    );
}

#[test]
fn a_reply_nobody_asked_for_reaches_the_sessions_chat() {
    // A scheduled task or a host-side message answers no Telegram message: its reply
    // still lands in the chat of its session, once.
    let s = stack("gw-unsolicited", FakeLlm::echo_openai());
    let f = tether::Frame::user_message(
        tether::Session::new("telegram", CHAT.to_string()),
        "daily summary",
        None,
    )
    .with_msg_id("cron-1-29000000");
    s.client().post_frame("my-agent", &f).unwrap();
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible() == "echo: daily summary")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.telegram.messages(CHAT).len(), msgs.len());
    assert_eq!(msgs.len(), 1);
}

/// A small valid-looking JPEG (the magic bytes Telegram checks, then filler).
fn jpeg(len: usize, fill: u8) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0];
    b.resize(len, fill);
    b
}

#[test]
fn a_photo_reaches_the_model_and_an_image_from_a_tool_comes_back_as_a_photo() {
    use aegis_e2e::llm::{openai_tool_sse, tool_results};
    use base64::Engine;
    let llm = FakeLlm::with(|req| {
        let pieces = if tool_results(req).is_empty() {
            openai_tool_sse(
                "Let me draw it.",
                &[("call_1", "respond_with_image", r#"{"path":"chart.png"}"#)],
                7,
            )
        } else {
            openai_sse(&["Here is the chart."])
        };
        Reply::Sse {
            pieces,
            delay: Duration::ZERO,
            end: End::Finish,
        }
    });
    let s = stack("gw-photos", llm);
    let png = b"\x89PNG\r\n\x1a\n chart bytes".to_vec();
    std::fs::write(s.instance_dir().join("workspace/chart.png"), &png).unwrap();
    // Telegram's sizes, smallest first; the largest is over the tether's limit.
    let sizes = vec![jpeg(300, 1), jpeg(20_000, 2), jpeg(800 * 1024, 3)];
    s.telegram.push_photo(CHAT, 7, &sizes, Some("what is this?"));
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible().contains("Here is the chart."))
    });
    let deadline = std::time::Instant::now() + T;
    while s.telegram.photos(CHAT).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    // The model saw the caption and the largest size that fits, as a data URL.
    let content = aegis_e2e::llm::last_content(&s.llm.requests()[0]);
    let (caption, note) = content[0]["text"].as_str().unwrap().split_once('\n').unwrap();
    assert_eq!(caption, "[Pat]: what is this?");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&sizes[1]);
    assert_eq!(
        content[1]["image_url"]["url"],
        format!("data:image/jpeg;base64,{b64}")
    );
    // The session keeps a reference to a blob file, not the bytes.
    let ws = s.instance_dir().join("workspace");
    let session = std::fs::read_to_string(ws.join(format!("sessions/telegram_{CHAT}.jsonl"))).unwrap();
    assert!(
        !session.contains(&b64[..100]),
        "image bytes inline in the session"
    );
    let blob = session
        .split('"')
        .find(|w| w.len() == 68 && w.ends_with(".jpg"))
        .expect("a blob name in the session");
    assert_eq!(
        std::fs::read(ws.join(".aegis/blobs").join(blob)).unwrap(),
        sizes[1]
    );
    // The agent's tools can open it too: a copy in the inbox, which the model is told of.
    let copy = format!("inbox/photo-{}.jpg", &blob[..12]);
    assert_eq!(note, format!("[photo saved in the workspace as {copy}]"));
    assert_eq!(std::fs::read(ws.join(copy)).unwrap(), sizes[1]);

    // The tool's image arrived once, as a photo, after the text.
    let photos = s.telegram.photos(CHAT);
    assert_eq!(photos.len(), 1, "one photo");
    assert_eq!(photos[0], ("image/png".to_string(), png));
    let calls = s.telegram.calls();
    let last_text = calls
        .iter()
        .rposition(|c| c.method == "sendMessage" || c.method == "editMessageText");
    let photo = calls.iter().position(|c| c.method == "sendPhoto");
    assert!(last_text < photo, "the photo follows the text");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.telegram.photos(CHAT).len(), 1, "sent exactly once");
}

#[test]
fn a_file_the_agent_sends_arrives_once_as_a_document_after_the_text() {
    use aegis_e2e::llm::{openai_tool_sse, tool_results};
    let llm = FakeLlm::with(|req| {
        let pieces = match tool_results(req).len() {
            0 => openai_tool_sse(
                "Packing it.",
                &[("call_1", "send_file", r#"{"path":"out/report.csv"}"#)],
                7,
            ),
            1 => openai_tool_sse(
                "",
                &[("call_2", "send_file", r#"{"path":"../../etc/passwd"}"#)],
                7,
            ),
            _ => openai_sse(&["Here is the report."]),
        };
        Reply::Sse {
            pieces,
            delay: Duration::ZERO,
            end: End::Finish,
        }
    });
    let s = stack("gw-send-file", llm);
    let ws = s.instance_dir().join("workspace");
    std::fs::create_dir_all(ws.join("out")).unwrap();
    // Not UTF-8, and larger than a tether line: only the blob's name travels.
    let body: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(ws.join("out/report.csv"), &body).unwrap();
    s.telegram.push_text(CHAT, 7, "Pat", "send me the report");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible().contains("Here is the report."))
    });
    let deadline = std::time::Instant::now() + T;
    while s.telegram.documents(CHAT).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file changed after the tool ran: the user gets it as it was sent.
    std::fs::write(ws.join("out/report.csv"), b"changed").unwrap();
    let docs = s.telegram.documents(CHAT);
    assert_eq!(docs.len(), 1, "one document");
    assert_eq!(docs[0].0, "report.csv");
    assert!(docs[0].1 == body, "the bytes arrive unchanged");
    let calls = s.telegram.calls();
    let last_text = calls
        .iter()
        .rposition(|c| c.method == "sendMessage" || c.method == "editMessageText");
    let doc = calls.iter().position(|c| c.method == "sendDocument");
    assert!(last_text < doc, "the document follows the text");
    // The model was told what it sent, and that a path outside the workspace is refused.
    let results = tool_results(&s.llm.requests()[2]);
    assert!(
        results[0]
            .1
            .contains("out/report.csv (1500000 bytes) will be sent"),
        "{results:?}"
    );
    assert!(results[1].1.contains("outside the workspace"), "{results:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.telegram.documents(CHAT).len(), 1, "sent exactly once");
}

/// An album (photos sent together) arrives from Telegram as one message per photo, here
/// split over two polls: the model gets it as one message with its caption and every photo
/// that fits (their sizes chosen to share the tether line), and answers once.
#[test]
fn an_album_reaches_the_model_as_one_message_and_is_answered_once() {
    let s = stack("gw-album", FakeLlm::echo_openai());
    let first = vec![jpeg(300, 1), jpeg(200_000, 2), jpeg(500_000, 3)];
    let second = vec![jpeg(300, 4), jpeg(150_000, 5)];
    let third = vec![jpeg(400_000, 6)]; // over its share (700 KB / 3) in any size
    s.telegram
        .push_album_photo(CHAT, 7, &first, Some("compare these"), "album-1");
    std::thread::sleep(Duration::from_millis(300));
    s.telegram.push_album_photo(CHAT, 7, &second, None, "album-1");
    s.telegram.push_album_photo(CHAT, 7, &third, None, "album-1");
    s.telegram.push_text(CHAT, 7, "Pat", "and after it?");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Pat]: and after it?")
    });
    let shown: Vec<String> = msgs.iter().map(|m| m.visible()).collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert!(
        shown[0].starts_with("⚠️ 1 of these 3 images are too large for the agent"),
        "{shown:?}"
    );
    // The echo model repeats the caption and the agent's notes of the two copies it made
    // for its tools.
    let (echo, notes) = shown[1].split_once('\n').unwrap();
    assert_eq!(echo, "echo: [Pat]: compare these");
    assert_eq!(
        notes
            .matches("[photo saved in the workspace as inbox/photo-")
            .count(),
        2,
        "{notes}"
    );
    assert_eq!(shown[2], "echo: [Pat]: and after it?");
    let reqs = s.llm.requests();
    assert_eq!(reqs.len(), 2, "one model call for the album");
    let content = aegis_e2e::llm::last_content(&reqs[0]);
    assert!(content[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("[Pat]: compare these\n[photo saved"));
    let b64 = |b: &[u8]| {
        use base64::Engine;
        format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    };
    assert_eq!(content[1]["image_url"]["url"], b64(&first[1]));
    assert_eq!(content[2]["image_url"]["url"], b64(&second[1]));
    assert!(content.get(3).is_none(), "the photo too large is left out");
}

/// A voice message reaches the agent as a recording; the agent has it written down (here
/// by a local Whisper server, which needs no key) and the model reads what was said. A
/// recording too large for the tether is named as left out.
/// A spoken answer: the model's `respond_with_voice` recording reaches the chat as a voice
/// message (`sendVoice`, Ogg Opus) after the reply's text; a user whose privacy settings
/// refuse voice messages gets it as a file.
#[test]
fn a_spoken_answer_arrives_as_a_voice_message_after_the_text() {
    use aegis_e2e::llm::openai_tool_sse;
    use aegis_e2e::openai_audio::{spoken_audio, FakeSpeech};
    let speech = FakeSpeech::start(None);
    let base = speech.base_url();
    let say = |id: &str, text: &str| {
        Reply::sse(openai_tool_sse(
            "",
            &[(id, "respond_with_voice", &json!({ "text": text }).to_string())],
            9,
        ))
    };
    let llm = FakeLlm::scripted(vec![
        say("v1", "It is sunny in Paris."),
        Reply::sse(openai_sse(&["Sunny."])),
        say("v2", "Hi Bo."),
        Reply::sse(openai_sse(&["Hi."])),
    ]);
    let mut s = Stack::with_env("gw-speak", llm, &[], &[("OPENAI_AUDIO_BASE_URL", base.as_str())]);
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "weather in Paris? say it");
    let deadline = std::time::Instant::now() + T;
    while s.telegram.voices(CHAT).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no voice message: {:?}",
            s.telegram.messages(CHAT)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let voices = s.telegram.voices(CHAT);
    assert_eq!(voices.len(), 1);
    assert_eq!(voices[0].0, "audio/ogg");
    assert_eq!(voices[0].1, spoken_audio("It is sunny in Paris.", "opus"));
    let msgs = s.telegram.messages(CHAT);
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(msgs[0].visible(), "Sunny.");
    let calls = s.telegram.calls();
    let last_text = calls
        .iter()
        .rposition(|c| c.method == "sendMessage" && c.body["chat_id"] == CHAT)
        .unwrap();
    let voice_at = calls.iter().position(|c| c.method == "sendVoice").unwrap();
    assert!(last_text < voice_at, "the text first");
    assert!(
        calls
            .iter()
            .any(|c| c.method == "sendChatAction" && c.body["action"] == "record_voice"),
        "the chat showed the voice being recorded"
    );

    let other = 5151;
    s.telegram.refuse_voice(other);
    s.telegram.push_text(other, 8, "Bo", "say hi");
    let deadline = std::time::Instant::now() + T;
    while s.telegram.documents(other).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing: {:?}",
            s.telegram.messages(other)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let docs = s.telegram.documents(other);
    assert_eq!(docs[0].0, "voice.ogg");
    assert_eq!(docs[0].1, spoken_audio("Hi Bo.", "opus"));
    assert!(s.telegram.voices(other).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.telegram.voices(CHAT).len(), 1, "sent once");
    assert!(
        s.telegram
            .messages(other)
            .iter()
            .all(|m| !m.visible().contains("could not be sent")),
        "{:?}",
        s.telegram.messages(other)
    );
    assert_eq!(speech.speeches().len(), 2);
}

#[test]
fn a_voice_message_is_written_down_for_the_model() {
    use aegis_e2e::openai_audio::{fake_ogg, FakeSpeech};
    let speech = FakeSpeech::start(None);
    let base = speech.base_url();
    let mut s = Stack::with_env(
        "gw-voice",
        FakeLlm::echo_openai(),
        &[],
        &[
            ("OPENAI_AUDIO_BASE_URL", base.as_str()),
            ("AEGIS_TRANSCRIBE_MODEL", "whisper-1"),
        ],
    );
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    let ogg = fake_ogg(24_000, 3);
    speech.says(&ogg, "What's the weather in Paris?");
    s.telegram.push_voice(CHAT, 7, &ogg, 4);
    let want = "echo: [Pat]: [voice message, 4 s]\n🎤 What's the weather in Paris?";
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == want));
    let sent = speech.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes, ogg, "the recording arrived whole");
    assert_eq!(
        (
            sent[0].model.as_str(),
            sent[0].file_name.as_str(),
            sent[0].content_type.as_deref()
        ),
        ("whisper-1", "voice.ogg", Some("audio/ogg"))
    );
    // The transcript is the user's turn; the recording is not kept.
    let sessions = s.home.join("kit/instances/my-agent/workspace/sessions");
    let history = std::fs::read_to_string(sessions.join(format!("telegram_{CHAT}.jsonl"))).unwrap();
    assert!(history.contains("🎤 What's the weather in Paris?"), "{history}");
    assert!(!history.contains("OggS"), "{history}");

    // The largest recording passed on fits the tether with the message around it.
    let largest = fake_ogg(700 * 1024, 5);
    speech.says(&largest, "A long story.");
    s.telegram.push_voice(CHAT, 7, &largest, 360);
    let want = "echo: [Pat]: [voice message, 6 min]\n🎤 A long story.";
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == want));
    assert_eq!(speech.requests()[1].bytes, largest);

    // A video: its sound is what the agent gets.
    let clip = fake_ogg(30_000, 6);
    speech.says(&clip, "Look at this view.");
    s.telegram.push_video(CHAT, 7, &clip, 9);
    let want = "echo: [Pat]: [video, 9 s]\n🎤 Look at this view.";
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == want));
    assert_eq!(speech.requests()[2].file_name, "video.mp4");

    // Too long for the tether line: it goes through the workspace's inbox, by path.
    let long = fake_ogg(3 << 20, 4);
    speech.says(&long, "An even longer story.");
    let id = s.telegram.push_voice(CHAT, 7, &long, 1500);
    let want = format!(
        "echo: [Pat]: [voice message, 25 min]\n[saved in the workspace as inbox/voice-{id}.ogg]\n🎤 An even longer story."
    );
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == want));
    assert!(speech.requests()[3].bytes == long, "the recording arrived whole");
    assert!(
        std::fs::read(
            s.home
                .join(format!("kit/instances/my-agent/workspace/inbox/voice-{id}.ogg"))
        )
        .unwrap()
            == long
    );
}

#[test]
fn a_file_downloading_in_one_chat_holds_no_other_and_a_crash_loses_nothing() {
    let mut s = stack("gw-chats-side-by-side", FakeLlm::echo_openai());
    let other = 5151;
    let asked = |s: &Stack| -> Vec<String> {
        s.llm
            .requests()
            .iter()
            .map(|r| {
                aegis_e2e::llm::last_content(r)
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    // A large file on a slow line: its download does not end until released.
    s.telegram.hold_downloads(true);
    s.telegram.push_file(
        CHAT,
        7,
        "report.pdf",
        "application/pdf",
        b"%PDF-1.7 body",
        Some("read this"),
    );
    s.telegram.wait_downloads(1, T);
    // The user sees the bot at work while the file comes.
    let deadline = std::time::Instant::now() + T;
    while !s
        .telegram
        .calls_of("sendChatAction")
        .iter()
        .any(|c| c.body["chat_id"] == CHAT)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no typing while the file downloads"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.telegram.push_text(other, 8, "Bo", "hello");
    s.telegram.wait_chat(other, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [Bo]: hello")
    });
    assert!(
        s.telegram.messages(CHAT).is_empty(),
        "the file's chat still waits for it"
    );

    // The gateway dies mid-download, after Telegram was told to forget the file's
    // message (it has read past it): the message is not lost. (Not in the instant
    // between Telegram creating the other chat's reply and the gateway recording its id,
    // which no client can close: see gateway_kill_mid_reply_neither_loses_nor_duplicates.)
    std::thread::sleep(Duration::from_millis(300));
    s.gateway.as_mut().unwrap().kill9();
    let later = s.telegram.push_text(CHAT, 7, "Pat", "and this?");
    s.start_gateway();
    s.telegram.wait_downloads(2, T);
    // "and this?" was read (the gateway asked past it), and waits behind the file in
    // its chat.
    let deadline = std::time::Instant::now() + T;
    while !s
        .telegram
        .calls_of("getUpdates")
        .iter()
        .any(|c| c.body["offset"].as_i64() > Some(later))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted gateway never read on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        asked(&s),
        ["[Bo]: hello"],
        "nothing overtook the file in its chat"
    );

    s.telegram.hold_downloads(false);
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    assert_eq!(
        asked(&s),
        [
            "[Bo]: hello",
            "[Pat]: read this\n\n[file report.pdf (application/pdf, 1 KB) saved in the workspace as inbox/report.pdf]",
            "[Pat]: and this?",
        ],
        "each message reached the model once, in its chat's order"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        s.telegram.messages(other).len(),
        1,
        "the other chat was not answered again"
    );
    assert_eq!(s.telegram.messages(CHAT).len(), 2);
    let inbox = s.instance_dir().join("workspace/inbox");
    assert_eq!(std::fs::read(inbox.join("report.pdf")).unwrap(), b"%PDF-1.7 body");
}

/// A message whose handling the gateway never lives through (four runs began it and
/// died) is given up by the fifth, with a word to its chat; the other chats go on.
#[test]
fn a_message_every_run_dies_on_is_given_up_and_its_chat_told() {
    let mut s = Stack::new("gw-poison", FakeLlm::echo_openai(), &[]);
    s.write_gateway_config(json!(["*"]));
    let poll = s.home.path().join("gateway/123456/poll.json");
    std::fs::create_dir_all(poll.parent().unwrap()).unwrap();
    let text = |id: i64, chat: i64, words: &str| {
        json!({"update_id": id, "message": {"message_id": id, "chat": {"id": chat, "type": "private"},
            "from": {"id": 7, "is_bot": false, "first_name": "Ann"}, "date": 1_700_000_000, "text": words}})
    };
    std::fs::write(
        &poll,
        json!({"offset": 1000, "pending": [[text(900, CHAT, "the fatal one")], [text(901, 5151, "hello")]],
               "tries": {"900": 4, "901": 1}})
        .to_string(),
    )
    .unwrap();
    s.start_gateway();
    s.telegram.wait_chat(5151, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [Ann]: hello")
    });
    let msgs = s.telegram.wait_chat(CHAT, T, |m| !m.is_empty());
    assert!(
        msgs[0]
            .visible()
            .starts_with("⚠️ A message you sent could not be handled"),
        "{msgs:#?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.llm.requests().len(),
        1,
        "the given-up message never reached the agent"
    );
    let left: Value = serde_json::from_str(&std::fs::read_to_string(&poll).unwrap()).unwrap();
    assert!(
        left.get("pending").is_none() && left.get("tries").is_none(),
        "{left}"
    );
    let log = s.gateway.as_ref().unwrap().log();
    assert!(log.contains("giving up message 900"), "{log}");
    assert!(
        !log.contains("the fatal one"),
        "the words are the user's, never logged"
    );
}

#[test]
fn an_image_too_large_gets_a_note_and_files_reach_the_model_as_text_or_in_the_workspace() {
    let mut s = Stack::new("gw-photo-limits", FakeLlm::echo_openai(), &[]);
    // [ours] The inbox holds 1 MB here: the files below fill most of it.
    gateway_with(&mut s, json!({"inbox_max_mb": 1}));
    s.telegram.push_photo(CHAT, 7, &[jpeg(800 * 1024, 1)], None);
    let msgs = s.telegram.wait_chat(CHAT, T, |m| !m.is_empty());
    assert!(msgs[0].visible().contains("too large"), "{:?}", msgs[0].visible());
    assert!(s.llm.requests().is_empty(), "nothing reached the model");
    // Nothing is coming: the typing indicator stops (it repeats every 3 s while on).
    let typing = || s.telegram.calls_of("sendChatAction").len();
    let before = typing();
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(typing(), before, "typing went on after the note");

    let png = b"\x89PNG\r\n\x1a\n document".to_vec();
    s.telegram.push_document(CHAT, 7, "image/png", &png, None);
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| {
            m.visible()
                .starts_with("echo: [Pat]: [image]\n[photo saved in the workspace as inbox/photo-")
        })
    });
    let req = s.llm.requests()[0].json();
    let content = &req["messages"].as_array().unwrap().last().unwrap()["content"];
    assert!(content[1]["image_url"]["url"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));

    // A document that is neither an image nor small text is saved into the workspace,
    // for the agent's tools, and the message says where.
    let asked = |n: usize| aegis_e2e::llm::last_content(&s.llm.wait_request(n, T));
    let inbox = s.instance_dir().join("workspace/inbox");
    // So is an image sent as a file too large for the line (a screenshot sent
    // uncompressed), where `read_file` shows it, rather than refused as a photo is.
    let mut shot = b"\x89PNG\r\n\x1a\n".to_vec();
    shot.resize(800 * 1024, 7);
    s.telegram.push_file(
        CHAT,
        7,
        "screen.png",
        "image/png",
        &shot,
        Some("what is wrong here?"),
    );
    assert_eq!(
        asked(2),
        "[Pat]: what is wrong here?\n\n[file screen.png (image/png, 800 KB) saved in the workspace as inbox/screen.png]"
    );
    assert!(std::fs::read(inbox.join("screen.png")).unwrap() == shot);
    s.telegram.push_file(
        CHAT,
        7,
        "../../report.pdf",
        "application/pdf",
        b"%PDF-1.7 body",
        Some("read this"),
    );
    assert_eq!(
        asked(3),
        "[Pat]: read this\n\n[file report.pdf (application/pdf, 1 KB) saved in the workspace as inbox/report.pdf]"
    );
    assert_eq!(std::fs::read(inbox.join("report.pdf")).unwrap(), b"%PDF-1.7 body");
    // A small text file is read, fenced; without a caption it is the message.
    s.telegram.push_file(
        CHAT,
        7,
        "app.log",
        "text/plain",
        b"boot ok\nERROR: disk full\n",
        Some("what's wrong?"),
    );
    assert_eq!(
        asked(4),
        "[Pat]: what's wrong?\n\n[file app.log]\n```\nboot ok\nERROR: disk full\n```"
    );
    s.telegram
        .push_file(CHAT, 7, "notes.md", "text/markdown", b"# todo", None);
    assert_eq!(asked(5), "[Pat]: [file notes.md]\n```\n# todo\n```");
    s.telegram.push_file(
        CHAT,
        7,
        "big.csv",
        "text/csv",
        &vec![b'x'; 40 * 1024],
        Some("sum it"),
    );
    assert_eq!(
        asked(6),
        "[Pat]: sum it\n\n[file big.csv (text/csv, 40 KB) saved in the workspace as inbox/big.csv]"
    );
    assert_eq!(std::fs::read(inbox.join("big.csv")).unwrap().len(), 40 * 1024);
    // Telegram gives bots files of at most 20 MB; a larger one is named as left out.
    s.telegram.push_file(
        CHAT,
        7,
        "disk.img",
        "application/octet-stream",
        &vec![0; (20 << 20) + 1],
        None,
    );
    assert_eq!(
        asked(7),
        "[Pat]: [file disk.img (application/octet-stream, 20481 KB) not passed on: bots can fetch files of at most 20 MB]"
    );
    // Files sent together arrive one message each, as an album: all of them are saved,
    // and answered once.
    s.telegram.push_album_file(CHAT, 7, "a.bin", b"first", "files-1");
    s.telegram.push_album_file(CHAT, 7, "b.bin", b"second", "files-1");
    assert_eq!(
        asked(8),
        "[Pat]: [file a.bin (application/octet-stream, 1 KB) saved in the workspace as inbox/a.bin]\n\n\
         [file b.bin (application/octet-stream, 1 KB) saved in the workspace as inbox/b.bin]"
    );
    assert_eq!(std::fs::read(inbox.join("b.bin")).unwrap(), b"second");
    // Past the inbox's limit a file is not saved, and the model is told why, and how to
    // make room.
    s.telegram.push_file(
        CHAT,
        7,
        "more.bin",
        "application/octet-stream",
        &vec![1; 300 * 1024],
        None,
    );
    assert_eq!(
        asked(9),
        "[Pat]: [file more.bin (application/octet-stream, 300 KB) not passed on: inbox/ holds 0.8 MB, \
         and the gateway keeps it under 1 MB (its inbox_max_mb): files there no longer needed can be \
         deleted to make room]"
    );
    assert!(!inbox.join("more.bin").exists());
    // A guest that turned the inbox into a link to a host folder gets nothing written
    // there, and the model is told.
    let host = temp_dir("gw-inbox-host");
    std::fs::remove_dir_all(&inbox).unwrap();
    std::os::unix::fs::symlink(host.path(), &inbox).unwrap();
    s.telegram
        .push_file(CHAT, 7, "notes.zip", "application/zip", b"PK\x03\x04", None);
    assert_eq!(
        asked(10),
        "[Pat]: [file notes.zip (application/zip, 1 KB) not passed on: the workspace's inbox is not a folder]"
    );
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
    assert_eq!(s.llm.requests().len(), 10, "each message answered once");
}

#[test]
fn a_scheduled_task_runs_once_on_time_through_serve_crashes_and_replies_in_its_chat() {
    use aegis_e2e::llm::{last_user_text, openai_tool_sse, tool_results};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    // Serve's clock: Monday 2026-11-23 08:58:00 UTC, 20x fast (a minute in 3 s).
    const START: i64 = 1_795_424_280;
    const SPEED: i64 = 20;
    let anchor = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let real = Instant::now();
    let virtual_secs = || START + (real.elapsed().as_millis() as i64 * SPEED) / 1000;
    let sleep_until = |t: i64| {
        let wait = (t - START) * 1000 / SPEED - real.elapsed().as_millis() as i64;
        std::thread::sleep(Duration::from_millis(wait.max(0) as u64));
    };
    let llm = FakeLlm::with(|req| {
        let pieces = if !tool_results(req).is_empty() {
            openai_sse(&["Scheduled."])
        } else if last_user_text(req).contains("Time for standup") {
            openai_sse(&["☀️ Standup in 5 minutes!"])
        } else {
            openai_tool_sse(
                "",
                &[(
                    "c1",
                    "cron_create",
                    r#"{"schedule": "0 9 * * 1-5", "text": "Time for standup"}"#,
                )],
                11,
            )
        };
        Reply::Sse {
            pieces,
            delay: Duration::ZERO,
            end: End::Finish,
        }
    });
    let clock = format!("{START},{anchor},{SPEED}");
    let mut s = Stack::with_serve_env("gw-cron", llm, &[], &[], &[("AEGIS_KIT_CLOCK", &clock)]);
    let aegis = s.instance_dir().join("workspace/.aegis");
    std::fs::create_dir_all(&aegis).unwrap();
    std::fs::write(aegis.join("agent.json"), r#"{"timezone": "UTC"}"#).unwrap();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();

    s.telegram
        .push_text(CHAT, 7, "Ann", "remind me of standup at 9 on weekdays");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "Scheduled."));
    let cron: serde_json::Value =
        serde_json::from_slice(&std::fs::read(aegis.join("cron.json")).unwrap()).unwrap();
    assert_eq!(
        cron["entries"][0]["reply_to"],
        json!({"channel": "telegram", "id": CHAT.to_string()})
    );
    assert!(
        virtual_secs() < START + 105,
        "the machine is too slow for this test's clock"
    );

    // serve dies just before 09:00 and is back only at 09:01:10: the 09:00 run is
    // caught up, once.
    sleep_until(START + 110);
    s.kill9_serve();
    sleep_until(START + 190);
    s.start_serve_again(&[]);
    let standup =
        |m: &[aegis_e2e::telegram::Msg]| m.iter().filter(|m| m.visible().contains("Standup in 5")).count();
    s.telegram.wait_chat(CHAT, T, |m| standup(m) == 1);
    // serve dies again right after the run: the restarted one does not send it again.
    s.kill9_serve();
    s.start_serve_again(&[]);
    sleep_until(virtual_secs() + 150);
    assert_eq!(
        standup(&s.telegram.messages(CHAT)),
        1,
        "{:#?}",
        s.telegram.messages(CHAT)
    );
    let runs = s
        .llm
        .requests()
        .iter()
        .filter(|r| last_user_text(r).contains("Time for standup"))
        .count();
    assert_eq!(runs, 1, "the model was asked once");
    // The run kept its own conversation, as the scheduled task's.
    let session =
        std::fs::read_to_string(s.instance_dir().join("workspace/sessions/cron_cron-1.jsonl")).unwrap();
    assert!(
        session.contains("[Scheduled Task]: Time for standup"),
        "{session}"
    );
    let minute = (START + 120) / 60;
    assert!(session.contains(&format!("cron-cron-1-{minute}")), "{session}");
}

/// "Remind me at ...": one-time tasks, one at an instant in UTC and one at a wall time
/// in the tasks' time zone, each answered in the chat once, then gone from the task file.
#[test]
fn a_one_time_task_reminds_once_in_its_chat_and_is_deleted() {
    use aegis_e2e::llm::{last_user_text, openai_tool_sse, tool_results};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    // Serve's clock: two days from now (the agent refuses a time already past, by its own
    // clock), 20 s before a minute starts, 20x fast (a minute in 3 s).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = (now.as_secs() as i64 / 60 + 2 * 1440) * 60 - 20;
    let anchor = now.as_millis() as i64;
    let real = Instant::now();
    let virtual_secs = move || start + (real.elapsed().as_millis() as i64 * 20) / 1000;
    let first = start + 20 + 120; // a minute's start, 7 s from now
    let utc = |t: i64, fmt_offset: i64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{}", t + fmt_offset), "+%Y-%m-%dT%H:%M"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // The second as Tokyo's wall time (UTC+9 all year).
    let (at_utc, at_tokyo) = (format!("{}Z", utc(first, 0)), utc(first + 60, 9 * 3600));
    let args = |at: &str, text: &str| json!({"at": at, "text": text}).to_string();
    let calls = [args(&at_utc, "Call Bob"), args(&at_tokyo, "Water the plants")];
    let llm = FakeLlm::with(move |req| {
        let said = last_user_text(req);
        let pieces = if !tool_results(req).is_empty() {
            openai_sse(&["Both set."])
        } else if said.contains("Call Bob") {
            openai_sse(&["📞 Time to call Bob!"])
        } else if said.contains("Water the plants") {
            openai_sse(&["🪴 The plants!"])
        } else {
            openai_tool_sse(
                "",
                &[("c1", "cron_create", &calls[0]), ("c2", "cron_create", &calls[1])],
                9,
            )
        };
        Reply::Sse {
            pieces,
            delay: Duration::ZERO,
            end: End::Finish,
        }
    });
    let clock = format!("{start},{anchor},20");
    let mut s = Stack::with_serve_env("gw-cron-once", llm, &[], &[], &[("AEGIS_KIT_CLOCK", &clock)]);
    let aegis = s.instance_dir().join("workspace/.aegis");
    std::fs::create_dir_all(&aegis).unwrap();
    std::fs::write(aegis.join("agent.json"), r#"{"timezone": "Asia/Tokyo"}"#).unwrap();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram
        .push_text(CHAT, 7, "Ann", "remind me to call Bob, then to water the plants");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "Both set."));
    let results = tool_results(&s.llm.requests()[1]);
    assert!(
        results[0]
            .1
            .contains(&format!(r#""runs_once_at":"{}:00Z""#, &at_utc[..16])),
        "{results:?}"
    );
    assert!(
        results[1].1.contains(&format!(r#""runs_once_at":"{at_tokyo}""#)),
        "{results:?}"
    );
    assert!(results[1].1.contains("Asia/Tokyo"), "{results:?}");
    assert!(
        virtual_secs() < first,
        "the machine is too slow for this test's clock"
    );

    let count = |m: &[aegis_e2e::telegram::Msg], text: &str| m.iter().filter(|m| m.visible() == text).count();
    let msgs = s.telegram.wait_chat(CHAT, T, |m| count(m, "🪴 The plants!") == 1);
    assert_eq!(count(&msgs, "📞 Time to call Bob!"), 1);
    let when = |text: &str| {
        s.llm
            .requests()
            .iter()
            .position(|r| last_user_text(r).contains(text))
            .unwrap()
    };
    assert!(when("Call Bob") < when("Water the plants"), "in their order");
    // Three more virtual minutes: neither comes again, and both are gone from the file.
    std::thread::sleep(Duration::from_secs(9));
    let msgs = s.telegram.messages(CHAT);
    assert_eq!(
        (
            count(&msgs, "📞 Time to call Bob!"),
            count(&msgs, "🪴 The plants!")
        ),
        (1, 1)
    );
    let cron: serde_json::Value =
        serde_json::from_slice(&std::fs::read(aegis.join("cron.json")).unwrap()).unwrap();
    assert_eq!(cron["entries"], json!([]), "{cron}");
    assert_eq!(s.llm.requests().len(), 4, "each reminder answered once");
}

#[test]
fn under_aegisvm_the_per_instance_gateway_fires_the_instances_tasks() {
    use std::time::{SystemTime, UNIX_EPOCH};
    // A host that does not fire tasks (AEGIS_KIT_CRON=off, like aegisd), a fast clock
    // just before 09:00 UTC, and a task the agent wrote earlier for this chat.
    const START: i64 = 1_795_424_340; // 2026-11-23 08:59:00 UTC
    let anchor = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let clock = format!("{START},{anchor},20");
    let s = Stack::with_serve_env(
        "gw-cron-per-instance",
        FakeLlm::echo_openai(),
        &[],
        &[],
        &[("AEGIS_KIT_CRON", "off"), ("AEGIS_KIT_CLOCK", &clock)],
    );
    let aegis = s.instance_dir().join("workspace/.aegis");
    std::fs::create_dir_all(&aegis).unwrap();
    std::fs::write(aegis.join("agent.json"), r#"{"timezone": "UTC"}"#).unwrap();
    let task = json!({"entries": [{"id": "cron-1", "schedule": "0 9 * * *", "message": "good morning",
        "session": "cron-1", "enabled": true, "created_at": "2026-11-01T00:00:00Z",
        "reply_to": {"channel": "telegram", "id": CHAT.to_string()}}], "next_id": 2});
    std::fs::write(aegis.join("cron.json"), task.to_string()).unwrap();
    let dir = s.home.join("kits/my-agent");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = json!({"telegram": {"allowed_chats": ["*"], "api_url": s.telegram.url()}});
    std::fs::write(dir.join("gateway.json"), cfg.to_string()).unwrap();
    let mut cmd = s.gateway_command();
    cmd.env("AEGIS_INSTANCE", "my-agent")
        .env("TELEGRAM_BOT_TOKEN", s.telegram.token())
        .env("AEGIS_KIT_CLOCK", &clock);
    let gw = Proc::spawn(cmd);
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.iter()
            .any(|m| m.visible() == "echo: [Scheduled Task]: good morning")
    });
    assert_eq!(msgs.len(), 1);
    assert!(gw.log().contains("task cron-1 runs"), "{}", gw.log());
    assert!(!s.serve.log().contains("task cron-1 runs"), "serve fired too");
    assert!(dir.join("cron-state.json").exists());
    // The gateway tells the agent when the task runs next: tomorrow's 09:00.
    let next = aegis.join("cron-next.json");
    let said = wait_json(&next, |v| v["tasks"]["cron-1"]["local"] == "Tue 2026-11-24 09:00");
    assert_eq!(said["zone"], "UTC");
    assert_eq!(said["tasks"]["cron-1"]["unix"], START + 60 + 86_400);
}

/// The JSON file at `path` (`Null` while there is none or it does not parse).
fn json_file(path: &std::path::Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The JSON file at `path` once `ready` says it is as wanted (within `T`).
fn wait_json(path: &std::path::Path, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let v = json_file(path);
        if ready(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{}: {v}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A chat whose user blocked the bot: the first reply refused says so, and the task
/// replying there no longer runs (nor costs the model) until the chat writes again.
#[test]
fn a_task_for_a_chat_that_blocked_the_bot_stops_running_until_it_writes_again() {
    use std::time::{SystemTime, UNIX_EPOCH};
    const START: i64 = 1_795_424_340; // 2026-11-23 08:59:00 UTC
    let anchor = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let clock = format!("{START},{anchor},20");
    let mut s = Stack::with_serve_env(
        "gw-gone",
        FakeLlm::echo_openai(),
        &[],
        &[],
        &[("AEGIS_KIT_CLOCK", &clock)],
    );
    let aegis = s.instance_dir().join("workspace/.aegis");
    std::fs::create_dir_all(&aegis).unwrap();
    let task = json!({"entries": [{"id": "cron-1", "schedule": "* * * * *", "message": "tick",
        "session": "cron-1", "enabled": true, "created_at": "2026-11-01T00:00:00Z",
        "on_conflict": "queue", "reply_to": {"channel": "telegram", "id": CHAT.to_string()}}], "next_id": 2});
    std::fs::write(aegis.join("cron.json"), task.to_string()).unwrap();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    let ticks = |m: &[aegis_e2e::telegram::Msg]| {
        m.iter()
            .filter(|m| m.visible() == "echo: [Scheduled Task]: tick")
            .count()
    };
    s.telegram.wait_chat(CHAT, T, |m| ticks(m) >= 1);

    // Blocked while the gateway heard nothing of it: the next reply refused says so.
    s.telegram.block(CHAT, true, false);
    let gone = aegis.join("gone-chats.json");
    let why = |v: &Value| v["chats"][CHAT.to_string()]["why"].clone();
    wait_json(&gone, |v| why(v) == "Forbidden: bot was blocked by the user");
    // Three more minutes of this clock: no run reaches the model (one under way when the
    // file was written may still).
    std::thread::sleep(Duration::from_secs(3));
    let asked = s.llm.requests().len();
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(
        s.llm.requests().len(),
        asked,
        "runs for a chat that blocked the bot"
    );

    // Unblocked, the user presses Start: the task runs and replies again.
    s.telegram.block(CHAT, false, false);
    let before = ticks(&s.telegram.messages(CHAT));
    s.telegram.push_text(CHAT, 7, "Ann", "/start");
    s.telegram.wait_chat(CHAT, T, |m| ticks(m) > before);
    let said = json_file(&gone);
    assert!(said["chats"].get(CHAT.to_string()).is_none(), "{said}");

    // Blocked again, with Telegram's word of it (`my_chat_member`): gone at once, without
    // waiting for a refusal, and nothing more is sent to the chat.
    let sends = || s.telegram.calls_of("sendMessage").len();
    s.telegram.block(CHAT, true, true);
    wait_json(&gone, |v| why(v) == "the user blocked the bot");
    std::thread::sleep(Duration::from_secs(3));
    let (asked, sent) = (s.llm.requests().len(), sends());
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!((s.llm.requests().len(), sends()), (asked, sent));
    // Unblocked the same way: back without a word from the user.
    s.telegram.block(CHAT, false, true);
    let before = ticks(&s.telegram.messages(CHAT));
    s.telegram.wait_chat(CHAT, T, |m| ticks(m) > before);
}

/// `/tasks` says when each task runs next, in the zone the host evaluates it in, which
/// only the host knows (here serve's `TZ`; agent.json names none).
#[test]
fn the_tasks_list_says_when_each_runs_next_in_the_hosts_zone() {
    use std::time::{SystemTime, UNIX_EPOCH};
    // serve's clock two days ahead (a next run the agent's own clock sees as ahead), fast.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let clock = format!("{},{},20", now.as_secs() + 2 * 86_400, now.as_millis());
    let mut s = Stack::with_serve_env(
        "gw-cron-next",
        FakeLlm::echo_openai(),
        &[],
        &[],
        &[("AEGIS_KIT_CLOCK", &clock), ("TZ", "Asia/Tokyo")],
    );
    let aegis = s.instance_dir().join("workspace/.aegis");
    std::fs::create_dir_all(&aegis).unwrap();
    let task = json!({"entries": [{"id": "cron-1", "schedule": "0 9 * * *", "message": "good morning",
        "session": "cron-1", "enabled": true, "created_at": "2026-11-01T00:00:00Z",
        "reply_to": {"channel": "telegram", "id": CHAT.to_string()}}], "next_id": 2});
    std::fs::write(aegis.join("cron.json"), task.to_string()).unwrap();
    let said = wait_json(&aegis.join("cron-next.json"), |v| !v.is_null());
    assert_eq!(said["zone"], "Asia/Tokyo");
    let local = said["tasks"]["cron-1"]["local"].as_str().unwrap().to_string();
    assert!(local.ends_with(" 09:00"), "{said}");
    assert_eq!(
        said["tasks"]["cron-1"]["unix"].as_i64().unwrap() % 86_400,
        0,
        "09:00 in Tokyo is 00:00 UTC"
    );

    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "/tasks");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible().starts_with("Scheduled tasks"))
    });
    let list = msgs.last().unwrap().visible();
    assert!(
        list.starts_with(
            "Scheduled tasks of this chat (schedules are evaluated in the host's time zone, Asia/Tokyo"
        ),
        "{list}"
    );
    assert!(
        list.contains(&format!("(0 9 * * *), next {local} (in ")),
        "{list}"
    );
    assert!(s.llm.requests().is_empty(), "answered without the model");
}

#[test]
fn https_with_a_private_ca_and_a_proxy_from_the_environment_end_to_end() {
    // Telegram over HTTPS with an RSA chain (as the real one), the model with ECDSA, each
    // from its own test CA; the model at a host name only the company proxy resolves.
    // serve hands its SSL_CERT_FILE and HTTPS_PROXY to the agent it supervises; the
    // gateway gets them from its shell.
    let llm = FakeLlm::echo_openai();
    let model_front = TlsFront::start(llm.url());
    let port: u16 = model_front.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy =
        ConnectProxy::start(move |t| (t == "model.internal:443").then(|| ([127, 0, 0, 1], port).into()));
    // The CA under /tmp, which the instance's sandbox replaces: serve keeps it visible.
    let ca_dir = temp_dir("gw-https-ca");
    let ca_path = ca_dir.join("ca.pem");
    std::fs::copy(fixture("ca.pem"), &ca_path).unwrap();
    let ca = ca_path.display().to_string();
    let s = Stack::with_serve_env(
        "gw-https",
        llm,
        &[],
        &[("OPENAI_BASE_URL", "https://model.internal/v1")],
        &[("SSL_CERT_FILE", &ca), ("HTTPS_PROXY", &proxy.url)],
    );
    let bot_front = TlsFront::start_with(s.telegram.url(), "localhost-rsa");
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "api_url": bot_front.url}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();

    // Without the CA the gateway cannot verify the Bot API and says why.
    let untrusting = Proc::spawn(s.gateway_command());
    untrusting.wait_for("invalid peer certificate", T);
    drop(untrusting);

    let mut cmd = s.gateway_command();
    let rsa_ca = fixture("rsa-ca.pem").display().to_string();
    cmd.env("SSL_CERT_FILE", &rsa_ca).env("HTTPS_PROXY", &proxy.url);
    let gw = Proc::spawn(cmd);
    gw.wait_for("trusting 1 certificate from SSL_CERT_FILE=", T);
    s.telegram.push_text(CHAT, 7, "Ann", "over https");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [Ann]: over https")
    });
    // The Bot API stand-in is on loopback: reached directly, never through the proxy.
    assert_eq!(proxy.targets(), ["model.internal:443"]);
}

#[test]
fn telegram_at_its_real_name_through_a_socks5h_proxy_where_it_is_blocked() {
    // Where Telegram is blocked (DNS included), the gateway keeps its default URL,
    // https://api.telegram.org, and HTTPS_PROXY names a SOCKS5 proxy that resolves the name
    // itself: here it leads to the Bot API stand-in behind TLS (RSA; the test certificate
    // names api.telegram.org). The gateway never resolves the name.
    let mut s = Stack::new("gw-socks", FakeLlm::echo_openai(), &[]);
    let bot_front = TlsFront::start_with(s.telegram.url(), "localhost-rsa");
    let port: u16 = bot_front.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Socks5Proxy::start(Some(("gw", "pw")), move |t| {
        (t == "api.telegram.org:443").then(|| ([127, 0, 0, 1], port).into())
    });
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"]}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    let mut cmd = s.gateway_command();
    cmd.env("SSL_CERT_FILE", fixture("rsa-ca.pem"))
        .env("HTTPS_PROXY", format!("socks5h://gw:pw@{}", proxy.addr));
    s.gateway = Some(Proc::spawn(cmd));
    s.telegram.push_text(CHAT, 8, "Ann", "through socks");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.last()
            .is_some_and(|m| m.visible() == "echo: [Ann]: through socks")
    });
    let targets = proxy.targets();
    assert!(
        !targets.is_empty() && targets.iter().all(|t| t == "api.telegram.org:443"),
        "{targets:?}"
    );
}

#[test]
fn ssl_cert_dir_in_tmp_stays_visible_to_a_sandboxed_instance() {
    // serve hands its SSL_CERT_DIR to the agent; the folder lies in /tmp, which the
    // instance's sandbox replaces, so serve keeps it visible (read-only) at its real path.
    let llm = FakeLlm::echo_openai();
    let front = TlsFront::start(llm.url());
    let ca_dir = temp_dir("gw-cert-dir");
    std::fs::copy(fixture("ca.pem"), ca_dir.join("model-ca.pem")).unwrap();
    let dir = ca_dir.display().to_string();
    let mut s = Stack::with_serve_env(
        "gw-cert-dir",
        llm,
        &[],
        &[("OPENAI_BASE_URL", &front.url)],
        &[("SSL_CERT_DIR", &dir)],
    );
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 9, "Ann", "private ca");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible() == "echo: [Ann]: private ca")
    });
}

/// `/exec` as upstream's gateway has it, through aegisd's exec API: only for the users
/// `exec_users` names, per user in a group, and `/exit` back to the agent.
#[test]
fn exec_mode_runs_commands_for_the_users_named_and_no_one_else() {
    use aegis_e2e::aegisd::OldAegisd;
    use aegis_e2e::proc::command;
    use aegis_e2e::telegram::FakeTelegram;
    const ADMIN: i64 = 7;
    const GROUP: i64 = -1002;
    let home = temp_dir("gw-exec");
    let tg = FakeTelegram::start("78:exec-token");
    let aegisd = OldAegisd::start(
        &home.join("aegisd.sock"),
        vec![("TELEGRAM_BOT_TOKEN".into(), tg.token().into())],
    );
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "exec_users": [ADMIN], "group_mode": "all", "api_url": tg.url()}});
    std::fs::write(home.join("gateway.json"), cfg.to_string()).unwrap();
    let start = || {
        let mut c = command("aegis-gateway");
        c.env("AEGIS_HOME", &home).arg("--socket").arg(&aegisd.socket);
        let gw = Proc::spawn(c);
        gw.wait_for("egress stream of my-agent connected", T);
        gw
    };
    let mut gw = start();
    // Notices and command results are sent whole; an agent's reply streams, so it is
    // waited for by its final text.
    let last = |chat: i64, n: usize| tg.wait_chat(chat, T, |m| m.len() >= n)[n - 1].visible();
    let reply = |chat: i64, n: usize, want: &str| {
        tg.wait_chat(chat, T, |m| m.len() >= n && m[n - 1].visible() == want);
    };

    // Someone not named cannot enter exec mode; their text still goes to the agent.
    tg.push_text(8, 8, "Eve", "/exec");
    assert!(last(8, 1).starts_with("⛔ Running commands is not enabled for you"));
    tg.push_text(8, 8, "Eve", "cat /etc/passwd");
    reply(8, 2, "echo: cat /etc/passwd");

    // The admin runs commands: shell syntax, both streams, the exit status.
    tg.push_text(ADMIN, ADMIN, "Ann", "/exec");
    assert!(last(ADMIN, 1).starts_with("⚡ Exec mode."));
    tg.push_text(
        ADMIN,
        ADMIN,
        "Ann",
        "echo hi > f.txt && cat f.txt; echo '<oops>' >&2; exit 3",
    );
    // aegisd reads stdout and stderr on their own threads, so the two streams' lines
    // arrive in either order; each is shown as it arrives.
    let out = tg.wait_chat(ADMIN, T, |m| m.len() >= 2)[1].clone();
    let (visible, html) = if out.visible().starts_with("hi") {
        ("hi\n<oops>", "<pre>hi\n&lt;oops&gt;</pre>")
    } else {
        ("<oops>\nhi", "<pre>&lt;oops&gt;\nhi</pre>")
    };
    assert_eq!(out.visible(), format!("{visible}\n⚠️ exit: 3"));
    assert!(out.text.contains(html), "{}", out.text);
    assert_eq!(
        std::fs::read_to_string(home.join("workspace/f.txt")).unwrap(),
        "hi\n"
    );
    tg.push_text(ADMIN, ADMIN, "Ann", "/usr/bin/env true");
    assert_eq!(last(ADMIN, 3), "exit: 0");
    // This Bot API has no drafts (404): a command whose output grows for 2.4 s asks for
    // one draft at most, not one a second, and the agent's replies stream as edits.
    tg.push_text(
        ADMIN,
        ADMIN,
        "Ann",
        "for i in 1 2 3 4; do echo $i; sleep 0.6; done",
    );
    assert_eq!(last(ADMIN, 4), "1\n2\n3\n4\nexit: 0");
    let drafts = tg.calls_of("sendMessageDraft").len();
    assert!(drafts <= 1, "{drafts} drafts asked of a Bot API without them");

    // Exec mode outlives the gateway (a crash, a config reload): the admin's next text
    // still runs as a command, and reaches no model.
    gw.kill9();
    let _gw = start();
    let drafts = tg.calls_of("sendMessageDraft").len();
    tg.push_text(ADMIN, ADMIN, "Ann", "echo still a command");
    assert_eq!(last(ADMIN, 5), "still a command\nexit: 0");
    // The agent's own commands keep their meaning: `/mcp`, `/model`, `/tasks`, `/memory`
    // and `/jobs` go to the agent, not to sh.
    tg.push_text(ADMIN, ADMIN, "Ann", "/mcp");
    reply(ADMIN, 6, "echo: /mcp");
    tg.push_text(ADMIN, ADMIN, "Ann", "/model gpt-5.5");
    reply(ADMIN, 7, "echo: /model gpt-5.5");
    tg.push_text(ADMIN, ADMIN, "Ann", "/tasks pause 3");
    reply(ADMIN, 8, "echo: /tasks pause 3");
    tg.push_text(ADMIN, ADMIN, "Ann", "/memory");
    reply(ADMIN, 9, "echo: /memory");
    tg.push_text(ADMIN, ADMIN, "Ann", "/jobs stop 2");
    reply(ADMIN, 10, "echo: /jobs stop 2");

    // In a group, exec mode is the admin's own: another member still talks to the agent.
    let group = json!({"id": GROUP, "type": "supergroup", "title": "Ops"});
    let from = |name: &str, id: i64| json!({"id": id, "is_bot": false, "first_name": name});
    let say = |who: (&str, i64), text: &str| {
        tg.push_message(json!({"chat": group, "from": from(who.0, who.1), "text": text}))
    };
    say(("Ann", ADMIN), "/exec");
    assert!(last(GROUP, 1).starts_with("⚡ Exec mode."));
    say(("Eve", 8), "touch eve-was-here");
    reply(GROUP, 2, "echo: touch eve-was-here");
    say(("Ann", ADMIN), "pwd");
    assert!(
        last(GROUP, 3).ends_with("/workspace\nexit: 0"),
        "{}",
        last(GROUP, 3)
    );

    // /exit: back to the agent.
    tg.push_text(ADMIN, ADMIN, "Ann", "/exit");
    assert_eq!(last(ADMIN, 11), "💬 Back to chat mode.");
    tg.push_text(ADMIN, ADMIN, "Ann", "ls");
    reply(ADMIN, 12, "echo: ls");
    // The new process learns again that drafts are refused, once for /exec and replies
    // (a group's reply never drafts).
    let since = tg.calls_of("sendMessageDraft").len() - drafts;
    assert!(since <= 1, "{since} drafts tried since the restart");

    let ran: Vec<String> = aegisd.execs().iter().map(|c| c.join(" ")).collect();
    assert_eq!(
        ran,
        vec![
            "sh -c echo hi > f.txt && cat f.txt; echo '<oops>' >&2; exit 3",
            "sh -c /usr/bin/env true",
            "sh -c for i in 1 2 3 4; do echo $i; sleep 0.6; done",
            "sh -c echo still a command",
            "sh -c pwd"
        ],
        "nothing of Eve's ran"
    );
    assert!(!home.join("workspace/eve-was-here").exists());
}

/// A forwarded message reaches the model as someone else's words, a shared location as
/// its coordinates; a forward is never a command, nor a shell line in exec mode.
#[test]
fn forwards_and_locations_reach_the_model_and_a_forward_never_runs() {
    let mut s = Stack::new("gw-forwards", FakeLlm::echo_openai(), &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "exec_users": [7], "api_url": s.telegram.url()}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    s.start_gateway();
    let ann = json!({"id": 7, "is_bot": false, "first_name": "Ann"});
    let chat = json!({"id": CHAT, "type": "private"});
    let bob = json!({"type": "user", "date": 1_700_000_000,
        "sender_user": {"id": 8, "is_bot": false, "first_name": "Bob", "last_name": "Smith"}});
    let asked = |n: usize| aegis_e2e::llm::last_content(&s.llm.wait_request(n, T));
    s.telegram.push_message(
        json!({"chat": chat, "from": ann, "forward_origin": bob, "text": "Meeting moved to 3pm"}),
    );
    assert_eq!(
        asked(1),
        "[Ann]: [forwarded from Bob Smith]\nMeeting moved to 3pm"
    );
    s.telegram.push_message(
        json!({"chat": chat, "from": ann, "location": {"latitude": 48.858_37, "longitude": 2.294_481}}),
    );
    assert_eq!(asked(2), "[Ann]: [location: 48.85837, 2.294481]");
    s.telegram.push_message(json!({"chat": chat, "from": ann, "sticker": {"file_id": "CAAC", "file_unique_id": "u",
        "type": "regular", "width": 512, "height": 512, "is_animated": false, "is_video": false, "emoji": "👍"}}));
    assert_eq!(asked(3), "[Ann]: [sticker 👍]");
    // A contact card, a poll, a checklist, a dice: each written out.
    s.telegram.push_message(
        json!({"chat": chat, "from": ann, "contact": {"phone_number": "+33612345678",
        "first_name": "Bob", "last_name": "Smith", "user_id": 8}}),
    );
    assert_eq!(
        asked(4),
        "[Ann]: [contact: Bob Smith, +33612345678 (Telegram user 8)]"
    );
    s.telegram.push_message(
        json!({"chat": chat, "from": ann, "poll": {"id": "p", "question": "Which day?",
        "options": [{"text": "Mon", "voter_count": 0}, {"text": "Tue", "voter_count": 0}],
        "total_voter_count": 0, "is_closed": false, "is_anonymous": false, "type": "regular",
        "allows_multiple_answers": true}}),
    );
    assert_eq!(
        asked(5),
        "[Ann]: [poll: Which day? — Mon / Tue (several answers allowed)]"
    );
    s.telegram
        .push_message(json!({"chat": chat, "from": ann, "checklist": {"title": "Trip",
        "tasks": [{"id": 1, "text": "passport", "completion_date": 1_700_000_000,
        "completed_by_user": {"id": 7, "is_bot": false, "first_name": "Ann"}},
        {"id": 2, "text": "tickets", "completion_date": 0}]}}));
    assert_eq!(asked(6), "[Ann]: [checklist: Trip — ✓ passport / tickets]");
    s.telegram
        .push_message(json!({"chat": chat, "from": ann, "dice": {"emoji": "🎯", "value": 6}}));
    assert_eq!(asked(7), "[Ann]: [dice 🎯: 6 of 6]");

    s.telegram.push_text(CHAT, 7, "Ann", "/exec");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 8);
    for text in ["touch forwarded-ran", "/exit"] {
        s.telegram
            .push_message(json!({"chat": chat, "from": ann, "forward_origin": bob, "text": text}));
    }
    assert_eq!(asked(9), "[Ann]: [forwarded from Bob Smith]\n/exit");
    s.telegram.push_text(CHAT, 7, "Ann", "ls");
    let msgs = s
        .telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible().ends_with("exit: 0")));
    let ls = msgs.last().unwrap().visible();
    assert!(!ls.contains("forwarded-ran"), "{ls}");
    assert!(!s.instance_dir().join("workspace/forwarded-ran").exists());
    // A line of exec mode, edited: it ran once, when sent, and its edit runs nothing, nor
    // reaches the model.
    let ran = s.telegram.push_text(CHAT, 7, "Ann", "echo once");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible().starts_with("once")));
    s.telegram.push_edit(
        json!({"chat": chat, "from": ann, "message_id": ran, "text": "echo once"}),
        "touch edited-ran",
    );
    let before = s.telegram.messages(CHAT).len();
    s.telegram.push_text(CHAT, 7, "Ann", "ls");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() > before);
    let ls = msgs.last().unwrap().visible();
    assert!(!ls.contains("edited-ran"), "{ls}");
    assert!(!s.instance_dir().join("workspace/edited-ran").exists());
    assert_eq!(s.llm.requests().len(), 9, "the edit reached no model");
}

/// A gateway killed while a command runs: the next one tells the chat the output is lost
/// (serve stops the command once its client is gone), once, rather than leaving the user
/// waiting for it.
#[test]
fn a_command_running_when_the_gateway_dies_is_reported_lost_after_the_restart() {
    let mut s = Stack::new("gw-exec-lost", FakeLlm::echo_openai(), &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "exec_users": [7], "api_url": s.telegram.url()}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "/exec");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 1);
    s.telegram.push_text(CHAT, 7, "Ann", "sleep 20; echo late");
    let record = s.home.join("gateway/123456/exec-running");
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&record).is_ok_and(|r| r.contains("sleep 20")) {
        assert!(std::time::Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.gateway.as_mut().unwrap().kill9();
    s.start_gateway();
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    assert!(
        msgs[1]
            .visible()
            .starts_with("⚠️ The gateway restarted while this command ran, so its output is lost")
            && msgs[1].visible().ends_with("\nsleep 20; echo late"),
        "{}",
        msgs[1].visible()
    );
    // Told once: another restart says nothing more, and exec mode still holds.
    s.gateway.take();
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "echo again");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 3);
    assert_eq!(msgs[2].visible(), "again\nexit: 0");
}

/// `/exec` through `aegis-kit serve`: the command runs in the instance's sandbox and
/// workspace.
#[test]
fn exec_through_serve_runs_in_the_instance_workspace() {
    let mut s = Stack::new("gw-exec-serve", FakeLlm::echo_openai(), &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "exec_users": [7], "api_url": s.telegram.url()}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    // A Bot API with drafts (a refused one would stop them for good).
    s.telegram.enable_drafts();
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "/exec");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 1);
    s.telegram
        .push_text(CHAT, 7, "Ann", "echo made > f.txt && pwd && ls");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    assert!(
        msgs[1].visible().ends_with("/my-agent/workspace\nf.txt\nexit: 0"),
        "{}",
        msgs[1].visible()
    );
    let made = s.home.join("kit/instances/my-agent/workspace/f.txt");
    assert_eq!(std::fs::read_to_string(made).unwrap(), "made\n");

    // A long command's output shows as a draft while it runs (a private chat), monospace
    // as it will end.
    let before = s.telegram.calls_of("sendMessageDraft").len();
    s.telegram
        .push_text(CHAT, 7, "Ann", "echo one; sleep 1.5; echo two");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 3);
    assert_eq!(msgs[2].visible(), "one\ntwo\nexit: 0");
    let drafts: Vec<(String, Value)> = s
        .telegram
        .calls_of("sendMessageDraft")
        .iter()
        .skip(before)
        .map(|c| {
            (
                c.body["text"].as_str().unwrap_or("").to_string(),
                c.body["parse_mode"].clone(),
            )
        })
        .collect();
    assert!(
        drafts
            .first()
            .is_some_and(|(d, mode)| d == "<pre>one\n</pre>" && mode == "HTML"),
        "{drafts:?}"
    );
}

/// The model's answers for the rich-message tests: a table when asked for one (a wide one,
/// past Telegram's 20 columns, for "wide"), else an echo; in pieces, as streamed.
fn tables_llm() -> FakeLlm {
    FakeLlm::with(|req| {
        let asked = aegis_e2e::llm::last_user_text(req);
        let text = if asked.contains("wide") {
            let cells: Vec<String> = (1..=21).map(|i| format!("c{i}")).collect();
            format!(
                "Wide:\n\n| {} |\n|{}\n| {} |",
                cells.join(" | "),
                "---|".repeat(21),
                cells.join(" | ")
            )
        } else if asked.contains("table") {
            TABLE.to_string()
        } else {
            format!("echo: {asked}")
        };
        let pieces: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Reply::sse(openai_sse(&refs))
    })
}

const TABLE: &str =
    "Our plans:\n\n| Plan | Price |\n|------|------:|\n| Free | 0 |\n| Pro | 20 |\n\nPick **one**.";

/// A gateway on `s` whose config adds `extra` to the usual fields.
fn gateway_with(s: &mut Stack, extra: Value) {
    let mut cfg = json!({"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "api_url": s.telegram.url()});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(s.home.join("gateway.json"), json!({"telegram": cfg}).to_string()).unwrap();
    s.start_gateway();
}

/// A reply with a table goes as a rich message (Bot API 10.1), which Telegram renders
/// from its Markdown: as the final message of a draft, or, streamed with edits, by the
/// final edit; other replies stay classic. A rich message Telegram refuses (a table past
/// its 20 columns) arrives as a classic one, once, and the next table is rich again.
#[test]
fn a_reply_with_a_table_arrives_as_a_rich_message() {
    let mut s = Stack::new("gw-rich", tables_llm(), &[]);
    s.telegram.enable_drafts();
    s.telegram.enable_rich_messages();
    gateway_with(&mut s, json!({}));
    s.telegram.push_text(CHAT, 7, "Ann", "a table please");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| !m.is_empty());
    assert!(msgs[0].rich, "{msgs:?}");
    assert_eq!(msgs[0].text, TABLE);
    s.telegram.push_text(CHAT, 7, "Ann", "hi");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    assert!(!msgs[1].rich, "no table, a classic message");
    assert_eq!(msgs[1].visible(), "echo: [Ann]: hi");
    // Past the limit: refused, then sent classic, once.
    s.telegram.push_text(CHAT, 7, "Ann", "a wide table");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 3);
    assert!(!msgs[2].rich && msgs[2].text.starts_with("Wide:"), "{msgs:?}");
    s.telegram.push_text(CHAT, 7, "Ann", "another table");
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 4);
    assert!(msgs[3].rich, "still rich after one refusal");
    let statuses: Vec<u16> = s
        .telegram
        .calls_of("sendRichMessage")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [200, 400, 200]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.telegram.messages(CHAT).len(), 4, "nothing doubled");
    s.gateway.take();

    // Streamed with edits: plain text as it grows, then the final edit makes it rich.
    let mut s = Stack::new("gw-rich-edit", tables_llm(), &[]);
    s.telegram.enable_rich_messages();
    gateway_with(&mut s, json!({"stream_mode": "edit"}));
    s.telegram.push_text(CHAT, 7, "Ann", "table");
    let msgs = s
        .telegram
        .wait_chat(CHAT, T, |m| m.first().is_some_and(|m| m.rich));
    assert_eq!((msgs.len(), msgs[0].text.as_str()), (1, TABLE));
    let edits = s.telegram.calls_of("editMessageText");
    let last = edits.last().unwrap();
    assert_eq!(last.body["rich_message"]["markdown"], TABLE);
    assert!(
        edits[..edits.len() - 1]
            .iter()
            .all(|e| e.body.get("rich_message").is_none()),
        "only the finished text is rich"
    );
}

/// A reply part that will end as a rich message streams as a rich draft
/// (`sendRichMessageDraft`): its table shows as a table while it is written. A Bot API
/// server without rich messages gets classic drafts and messages from the first refusal on.
#[test]
fn a_table_streams_as_a_rich_draft() {
    for rich in [true, false] {
        // Each reply is held, its table written, until the test opens its gate.
        let gates = [aegis_e2e::llm::Gate::default(), aegis_e2e::llm::Gate::default()];
        let held = gates.clone();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let llm = FakeLlm::with(move |_| {
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let pieces: Vec<&str> = TABLE.split_inclusive('\n').collect();
            Reply::held(&pieces[..6], &held[n.min(1)], &pieces[6..])
        });
        let mut s = Stack::new("gw-rich-draft", llm, &[]);
        s.telegram.enable_drafts();
        if rich {
            s.telegram.enable_rich_messages();
        }
        gateway_with(&mut s, json!({}));
        let written = "Our plans:\n\n| Plan | Price |\n|------|------:|\n| Free | 0 |\n| Pro | 20 |";
        for (i, gate) in gates.iter().enumerate() {
            s.telegram.push_text(CHAT, 7, "Ann", "a table please");
            let deadline = std::time::Instant::now() + T;
            loop {
                let shown = s.telegram.draft(CHAT).map(|(_, t)| t).unwrap_or_default();
                if shown.contains("Pro") {
                    if rich {
                        assert_eq!(shown.trim_end(), written, "the Markdown, rendered by Telegram");
                    } else {
                        assert!(shown.contains("Plan | Price\n-----+------"), "monospace: {shown}");
                    }
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no draft with the table: {shown:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            gate.open();
            let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == i + 1);
            assert_eq!(msgs[i].rich, rich, "{msgs:?}");
        }
        let statuses: Vec<u16> = s
            .telegram
            .calls_of("sendRichMessageDraft")
            .iter()
            .map(|c| c.status)
            .collect();
        if rich {
            assert!(
                statuses.len() >= 2 && statuses.iter().all(|&st| st == 200),
                "{statuses:?}"
            );
        } else {
            assert_eq!(statuses, [404], "learnt at once");
            assert!(
                s.telegram.calls_of("sendRichMessage").is_empty(),
                "the draft's refusal says the server has no rich messages"
            );
        }
        s.gateway.take();
    }
}

/// A Bot API server from before rich messages (a local one not yet updated): the first
/// rich message meets its 404 (or, as an edit, its "message text is empty"), goes out
/// classic, and the gateway sends no more rich messages to it.
#[test]
fn an_older_bot_api_gets_classic_messages_after_one_refusal() {
    let mut s = Stack::new("gw-rich-old", tables_llm(), &[]);
    s.telegram.enable_drafts();
    gateway_with(&mut s, json!({}));
    for (i, ask) in ["table", "table again"].iter().enumerate() {
        s.telegram.push_text(CHAT, 7, "Ann", ask);
        let msgs = s.telegram.wait_chat(CHAT, T, |m| {
            m.len() == i + 1 && m[i].visible().ends_with("Pick one.")
        });
        // A classic message: the table monospace, its columns aligned.
        assert!(!msgs[i].rich);
        assert!(
            msgs[i]
                .text
                .contains("<pre>Plan | Price\n-----+------\nFree |     0\nPro  |    20</pre>"),
            "{msgs:?}"
        );
    }
    // (A draft of the table, on a slow machine, may meet the refusal first.)
    let tries =
        s.telegram.calls_of("sendRichMessage").len() + s.telegram.calls_of("sendRichMessageDraft").len();
    assert_eq!(tries, 1, "learnt at once");
    s.gateway.take();

    let mut s = Stack::new("gw-rich-old-edit", tables_llm(), &[]);
    gateway_with(&mut s, json!({"stream_mode": "edit", "rich_messages": "always"}));
    let edits = |s: &Stack| -> Vec<(bool, u16)> {
        s.telegram
            .calls_of("editMessageText")
            .iter()
            .map(|c| (c.body.get("rich_message").is_some(), c.status))
            .collect()
    };
    for (i, ask) in ["first", "second"].iter().enumerate() {
        s.telegram.push_text(CHAT, 7, "Ann", ask);
        s.telegram.wait_chat(CHAT, T, |m| {
            m.len() == i + 1 && m[i].visible() == format!("echo: [Ann]: {ask}")
        });
        // Its final edit comes a second after the message (the edit throttle).
        let deadline = std::time::Instant::now() + T;
        while edits(&s).iter().filter(|(rich, _)| !rich).count() < i + 1 {
            assert!(std::time::Instant::now() < deadline, "{:?}", edits(&s));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The first finished text was tried rich ("message text is empty": the server reads
    // only `text`), then edited classic (already shown: "not modified"); the second, classic.
    assert_eq!(edits(&s), [(true, 400), (false, 400), (false, 400)]);
}

/// A draft offers Telegram's stop button (Bot API 10.1 `can_stop`): pressed, it stops the
/// reply it streams, as `/stop` would, and the text so far stays as the final message.
/// The button names its own reply: pressed on a finished reply's draft, it stops nothing
/// that began since.
#[test]
fn a_drafts_stop_button_stops_that_reply_and_no_other() {
    let slow: Vec<String> = (0..8).map(|i| format!("w{i} ")).collect();
    let slow_refs: Vec<&str> = slow.iter().map(String::as_str).collect();
    let llm = FakeLlm::scripted(vec![
        Reply::stalls_after("thinking hard"),
        Reply::sse(openai_sse(&["quick answer"])),
        Reply::Sse {
            pieces: openai_sse(&slow_refs),
            delay: Duration::from_millis(200),
            end: End::Finish,
        },
    ]);
    let mut s = Stack::new("gw-stop-button", llm, &[]);
    s.telegram.enable_drafts();
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    let drafted = |s: &Stack, starts: &str| -> Value {
        let deadline = std::time::Instant::now() + T;
        loop {
            let calls = s.telegram.calls_of("sendMessageDraft");
            let text = |c: &&aegis_e2e::telegram::Call| c.body["text"].as_str().unwrap_or("").to_string();
            if let Some(c) = calls
                .iter()
                .find(|c| !text(c).is_empty() && text(c).starts_with(starts))
            {
                return c.body.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no draft {starts:?}: {calls:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    s.telegram.push_text(CHAT, 7, "Ann", "tell me everything");
    let draft = drafted(&s, "thinking hard");
    assert_eq!(draft["can_stop"], true);
    assert_eq!(draft["keep_on_stop"], true);
    let first = draft["draft_id"].as_i64().unwrap();
    s.telegram.press_stop(CHAT, first);
    let msgs = s.telegram.wait_chat(CHAT, T, |m| {
        m.last().is_some_and(|m| m.visible().contains("Reply cancelled"))
    });
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].visible().starts_with("thinking hard"), "{msgs:?}");
    s.gateway
        .as_ref()
        .unwrap()
        .wait_for("the stop button of the reply to message", T);

    // A finished reply's button, pressed while the next reply streams, stops nothing.
    s.telegram.push_text(CHAT, 7, "Ann", "quick");
    s.telegram.wait_chat(CHAT, T, |m| m.len() == 2);
    let quick = s
        .telegram
        .calls_of("sendMessageDraft")
        .iter()
        .map(|c| c.body["draft_id"].as_i64().unwrap())
        .find(|id| *id != first)
        .expect("the quick reply's draft");
    s.telegram.push_text(CHAT, 7, "Ann", "count slowly");
    drafted(&s, "w0");
    s.telegram.press_stop(CHAT, quick);
    let full = slow.concat();
    let msgs = s.telegram.wait_chat(CHAT, T, |m| m.len() == 3);
    assert_eq!(
        msgs[2].visible(),
        full.trim_end(),
        "the slow reply ran to its end"
    );
}

/// John, and his private chat with the bot.
fn john_in_private() -> (Value, Value) {
    (
        json!({"id": 7, "is_bot": false, "first_name": "John"}),
        json!({"id": CHAT, "type": "private", "first_name": "John"}),
    )
}

/// John's question about "frnace", sent and being answered (its reply shows "Par"): the
/// message, with its id, to edit.
fn question_being_answered(s: &Stack) -> Value {
    let (john, chat) = john_in_private();
    let mut first = json!({"chat": chat, "from": john, "text": "whats the capital of frnace"});
    let id = s.telegram.push_message(first.clone());
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible().starts_with("Par")));
    first["message_id"] = json!(id);
    first
}

/// A message its sender edits is answered again, told to the model as an edit; the reply
/// still running for its old words stops. An earlier message's edit stops no one's reply
/// and is answered in its turn; an edit into a command runs nothing.
#[test]
fn an_edited_message_is_answered_again_and_stops_the_reply_to_its_old_words() {
    use aegis_e2e::llm::last_user_text;
    let (gate, slow) = (aegis_e2e::llm::Gate::default(), aegis_e2e::llm::Gate::default());
    let (held, held_slow) = (gate.clone(), slow.clone());
    let llm = FakeLlm::with(move |req| {
        let text = last_user_text(req);
        if text.contains("frnace") {
            return Reply::held(&["Par"], &held, &["is"]);
        }
        if text.contains("slowly") {
            return Reply::held(&["Slo"], &held_slow, &["wly"]);
        }
        Reply::sse(openai_sse(&["echo: ", &text]))
    });
    let s = stack("gw-edits", llm);
    let (john, chat) = john_in_private();
    let edited = question_being_answered(&s);
    let id = edited["message_id"].clone();
    s.telegram
        .push_edit(edited.clone(), "what is the capital of France?");
    let want =
        "echo: [John]: [edited message: it replaces its earlier version]\nwhat is the capital of France?";
    let msgs = s
        .telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == want));
    gate.open();
    assert_eq!(
        msgs[0].visible(),
        "Par\n\n⏹ Reply cancelled.",
        "the old words' reply stopped"
    );
    let sent = s.telegram.calls_of("sendMessage");
    let replies = sent
        .iter()
        .filter(|c| c.body["reply_parameters"]["message_id"] == id)
        .count();
    assert_eq!(replies, 1, "the edit's answer replies to the edited message");
    // The model saw the question, its stopped answer, and the edit.
    let asked = s.llm.requests();
    let msgs_seen = asked[1].json()["messages"].clone();
    let contents: Vec<String> = msgs_seen
        .as_array()
        .unwrap()
        .iter()
        .map(|m| aegis_e2e::llm::unstamped(m["content"].as_str().unwrap_or("")).to_string())
        .collect();
    assert_eq!(contents[1], "[John]: whats the capital of frnace");
    assert_eq!(contents[2], "Par");
    assert!(
        contents[3].ends_with("what is the capital of France?"),
        "{contents:?}"
    );

    // An earlier message's edit, while a later message's reply runs: that reply goes on,
    // and the edit is answered after it. An edit into a command runs nothing.
    let later = s.telegram.push_text(CHAT, 7, "John", "tell me slowly");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible().starts_with("Slo")));
    s.telegram.push_edit(edited.clone(), "and what of Italy?");
    std::thread::sleep(Duration::from_millis(300));
    slow.open();
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible().ends_with("]\nand what of Italy?"))
    });
    let later_msg = json!({"chat": chat, "from": john, "message_id": later, "text": "tell me slowly"});
    s.telegram.push_edit(later_msg, "/new");
    s.telegram.push_text(CHAT, 7, "John", "last");
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "echo: [John]: last"));
    let all: Vec<String> = s.telegram.messages(CHAT).iter().map(|m| m.visible()).collect();
    assert!(
        all.contains(&"Slowly".to_string()),
        "the later reply went on: {all:?}"
    );
    assert_eq!(
        all.iter().filter(|t| t.contains("Reply cancelled")).count(),
        1,
        "{all:?}"
    );
    assert!(!all.iter().any(|t| t.contains("New conversation")), "{all:?}");
    assert_eq!(s.llm.requests().len(), 5, "the command's edit reached no one");
}

/// What was last passed on in a chat is kept with the bot's state: an edit after the
/// gateway restarted still stops the reply running for the old words, rather than
/// waiting behind it and leaving the user two answers.
#[test]
fn an_edit_after_a_gateway_restart_still_stops_the_reply_to_its_old_words() {
    use aegis_e2e::llm::last_user_text;
    let gate = aegis_e2e::llm::Gate::default();
    let held = gate.clone();
    let llm = FakeLlm::with(move |req| {
        let text = last_user_text(req);
        if text.contains("frnace") {
            return Reply::held(&["Par"], &held, &["is"]);
        }
        Reply::sse(openai_sse(&["echo: ", &text]))
    });
    let mut s = stack("gw-edit-restart", llm);
    let edited = question_being_answered(&s);
    s.gateway.as_mut().unwrap().kill9();
    s.start_gateway();
    s.telegram.push_edit(edited, "what is the capital of France?");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter()
            .any(|m| m.visible().ends_with("]\nwhat is the capital of France?"))
    });
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible().contains("Reply cancelled"))
    });
    gate.open();
    std::thread::sleep(Duration::from_millis(300));
    let all: Vec<String> = s.telegram.messages(CHAT).iter().map(|m| m.visible()).collect();
    assert!(
        !all.iter().any(|t| t.starts_with("Paris")),
        "the old words' reply ran on: {all:?}"
    );
}

/// With `edited_messages: ignore` edits are not even asked for, as upstream.
#[test]
fn edits_go_unseen_when_the_config_says_ignore() {
    let mut s = Stack::new("gw-edits-off", FakeLlm::echo_openai(), &[]);
    let cfg = json!({"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent",
        "allowed_chats": ["*"], "api_url": s.telegram.url(), "edited_messages": "ignore"}});
    std::fs::write(s.home.join("gateway.json"), cfg.to_string()).unwrap();
    s.start_gateway();
    let john = json!({"id": 7, "is_bot": false, "first_name": "John"});
    let chat = json!({"id": CHAT, "type": "private", "first_name": "John"});
    let id = s
        .telegram
        .push_message(json!({"chat": chat, "from": john, "text": "one"}));
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "echo: [John]: one"));
    s.telegram.push_edit(
        json!({"chat": chat, "from": john, "message_id": id, "text": "one"}),
        "two",
    );
    s.telegram.push_text(CHAT, 7, "John", "three");
    s.telegram.wait_chat(CHAT, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [John]: three")
    });
    assert_eq!(s.llm.requests().len(), 2, "the edit reached no one");
    let polls = s.telegram.calls_of("getUpdates");
    assert!(polls
        .iter()
        .all(|c| !c.body["allowed_updates"].to_string().contains("edited_message")));
}

/// An MCP server's yes-or-no question shows its answers as buttons under the question
/// (the reply's last message); a tap is the user's answer: the app stops waiting
/// (`answerCallbackQuery`), the buttons go, and the reply goes on. In a group whose bot
/// answers only what is addressed to it, a tap counts as a reply to the question, and only
/// the member asked can answer: another's tap is told so, and changes nothing. A tap is
/// none of the messages `rate_limit` counts (holding it back would hold the reply).
#[test]
fn a_questions_answers_are_buttons_to_tap() {
    let llm = FakeLlm::scripted(vec![
        Reply::sse(aegis_e2e::llm::openai_tool_sse(
            "Cleaning up.",
            &[("c1", "fake_confirm", "{}")],
            3,
        )),
        Reply::sse(openai_sse(&["All clean."])),
        Reply::sse(aegis_e2e::llm::openai_tool_sse(
            "",
            &[("c2", "fake_confirm", "{}")],
            3,
        )),
        Reply::sse(openai_sse(&["Nothing deleted."])),
    ]);
    let mut s = Stack::new("gw-answer-buttons", llm, &[]);
    // Ann asks twice; her taps answer questions and are no messages of the limit's.
    gateway_with(&mut s, json!({"rate_limit": {"messages": 2, "minutes": 60}}));
    let ws = s.instance_dir().join("workspace");
    std::fs::create_dir_all(ws.join(".aegis")).unwrap();
    // In the workspace: a sandboxed instance sees its own /tmp, not the host's (where a
    // clean clone's build may be).
    let server = ws.join("fake-mcp");
    std::fs::copy(aegis_e2e::proc::bin("fake-mcp"), &server).unwrap();
    std::fs::write(
        ws.join(".aegis/agent.json"),
        json!({"mcp": {"fake": {"command": server}}}).to_string(),
    )
    .unwrap();
    s.telegram.push_text(CHAT, 7, "Ann", "clean up");
    let msgs = s
        .telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| !m.buttons.is_empty()));
    let question = msgs.iter().find(|m| !m.buttons.is_empty()).unwrap().clone();
    assert!(
        question
            .visible()
            .starts_with("Cleaning up.\n\n❓ The MCP server “fake” asks: Delete 3 files?"),
        "{}",
        question.visible()
    );
    let labels: Vec<Vec<&str>> = question
        .buttons
        .iter()
        .map(|row| row.iter().map(|(t, _)| t.as_str()).collect())
        .collect();
    assert_eq!(labels, [["Yes", "No", "/decline"]]);
    // The tap is answered and the buttons go before the answer is passed on: with the
    // instance's host slow to take it (here: stopped), the app does not wait on it.
    let held = s.serve.pause();
    let tap = s.telegram.press_button(CHAT, question.id, 7, "Yes");
    let answered =
        |m: &[aegis_e2e::telegram::Msg]| m.iter().any(|m| m.id == question.id && m.buttons.is_empty());
    let after = s.telegram.wait_chat(CHAT, T, answered);
    assert!(
        !s.telegram.open_callbacks().contains(&tap),
        "the tap was answered"
    );
    let asked = after.iter().find(|m| m.id == question.id).unwrap();
    assert_eq!(
        asked.visible(),
        question.visible(),
        "the question stays as it was"
    );
    drop(held);
    s.telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "All clean."));
    let reqs = s.llm.requests();
    let result = aegis_e2e::llm::tool_results(&reqs[1]);
    assert_eq!(
        result[0].1,
        "[asked in the chat: ❓ The MCP server “fake” asks: Delete 3 files? The user answered: “Yes”]\n\ndeleted"
    );

    const GROUP: i64 = -1005;
    s.telegram.push_message(
        json!({"chat": {"id": GROUP, "type": "supergroup", "title": "Ops"},
        "from": {"id": 7, "is_bot": false, "first_name": "Ann"}, "text": "@test_bot clean up"}),
    );
    let msgs = s
        .telegram
        .wait_chat(GROUP, T, |m| m.iter().any(|m| !m.buttons.is_empty()));
    let question = msgs.iter().find(|m| !m.buttons.is_empty()).unwrap().clone();
    assert!(
        question
            .visible()
            .ends_with("In a group, reply to this message to answer."),
        "{}",
        question.visible()
    );
    let bystander = s.telegram.press_button(GROUP, question.id, 8, "Yes");
    let deadline = std::time::Instant::now() + T;
    while s.telegram.open_callbacks().contains(&bystander) {
        assert!(
            std::time::Instant::now() < deadline,
            "the bystander's tap was never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let told = s.telegram.calls_of("answerCallbackQuery");
    assert_eq!(
        told.last().unwrap().body["text"],
        "This question is for the person it asks."
    );
    let still = s.telegram.messages(GROUP);
    assert!(
        !still
            .iter()
            .find(|m| m.id == question.id)
            .unwrap()
            .buttons
            .is_empty(),
        "the buttons stay for the one asked"
    );
    s.telegram.press_button(GROUP, question.id, 7, "No");
    s.telegram
        .wait_chat(GROUP, T, |m| m.iter().any(|m| m.visible() == "Nothing deleted."));
    let result = aegis_e2e::llm::tool_results(&s.llm.requests()[3]);
    assert!(
        result[0].1.ends_with("The user answered: “No”]\n\nkept"),
        "{}",
        result[0].1
    );
}

/// A group's anonymous admins write as the group, and Telegram puts the same placeholder
/// user (GroupAnonymousBot) in `from` for all of them, in every group: each group is one
/// sender of its own, for `rate_limit`, for the name the model reads and for a quote.
#[test]
fn anonymous_admins_are_their_group_not_one_user_of_every_group() {
    let mut s = Stack::new("gw-anonymous", FakeLlm::echo_openai(), &[]);
    gateway_with(&mut s, json!({"rate_limit": {"messages": 1, "minutes": 60}}));
    let tg = &s.telegram;
    let anonymous = json!({"id": 1_087_968_824, "is_bot": true, "first_name": "Group",
        "username": "GroupAnonymousBot"});
    let group = |id: i64, title: &str| json!({"id": id, "type": "supergroup", "title": title});
    let (a, b) = (group(-1005, "Team A"), group(-1006, "Team B"));
    tg.push_message(json!({"chat": a, "from": anonymous, "sender_chat": a, "text": "@test_bot one"}));
    tg.wait_chat(-1005, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Team A]: one")
    });
    tg.push_message(json!({"chat": b, "from": anonymous, "sender_chat": b, "text": "@test_bot two"}));
    tg.wait_chat(-1006, T, |m| {
        m.iter().any(|m| m.visible() == "echo: [Team B]: two")
    });
    // Team A's second message is past its own count, and the note names the group.
    tg.push_message(json!({"chat": a, "from": anonymous, "sender_chat": a, "text": "@test_bot three"}));
    let msgs = tg.wait_chat(-1005, T, |m| m.len() == 2);
    assert!(
        msgs[1]
            .visible()
            .starts_with("⚠️ Not passed on: Team A, you have sent 1 message"),
        "{}",
        msgs[1].visible()
    );
    // A reply to an anonymous admin's message quotes the group.
    let said = json!({"message_id": 77, "chat": b, "from": anonymous, "sender_chat": b, "text": "ship it"});
    tg.push_message(
        json!({"chat": b, "from": {"id": 8, "is_bot": false, "first_name": "Bob"},
        "reply_to_message": said, "text": "@test_bot sure?"}),
    );
    tg.wait_chat(-1006, T, |m| {
        m.iter()
            .any(|m| m.visible() == "echo: [Bob]: > Team B: ship it\nsure?")
    });
    assert_eq!(s.llm.requests().len(), 3);
}

/// [ours] `rate_limit`: past it, a sender is told once, and what they send then reaches
/// neither the instance nor the model; nobody else is held back by their count (another
/// person, the exempt owner), nor are the bot's own commands; in a group the note names
/// whom it is for; a kill -9 of the gateway resets no count. (Taps on a question's
/// answers: `a_questions_answers_are_buttons_to_tap`.)
#[test]
fn a_sender_past_the_rate_limit_is_told_once_and_reaches_no_model() {
    const GROUP: i64 = -1002;
    let mut s = Stack::new("gw-rate", FakeLlm::echo_openai(), &[]);
    let limit = json!({"rate_limit": [{"messages": 2, "minutes": 60}, {"messages": 50, "minutes": 1440}],
        "rate_limit_exempt": [9]});
    gateway_with(&mut s, limit);
    let tg = &s.telegram;
    tg.push_text(CHAT, 7, "Ann", "one");
    let two_update = tg.push_text(CHAT, 7, "Ann", "two");
    tg.push_text(CHAT, 7, "Ann", "three");
    tg.push_text(CHAT, 7, "Ann", "four");
    // Handled after "four" (a chat's messages are handled in order), and not held back.
    tg.push_text(CHAT, 7, "Ann", "/new");
    // The notice is the gateway's own, so it may come before the agent's replies.
    let want = [
        "echo: [Ann]: one",
        "echo: [Ann]: two",
        "⚠️ Not passed on: You have sent 2 messages in the last hour, the most this bot takes. Send it again in 1 h.",
        "🆕 New conversation started.",
    ];
    let shown = |m: &[aegis_e2e::telegram::Msg]| {
        let mut texts: Vec<String> = m.iter().map(|m| m.visible()).collect();
        texts.sort();
        texts
    };
    let mut sorted = want.map(String::from).to_vec();
    sorted.sort();
    let msgs = tg.wait_chat(CHAT, T, |m| shown(m) == sorted);
    assert_eq!(
        shown(&msgs),
        sorted,
        "told once, about the rule that holds her back"
    );
    // Another person, and the owner, are answered as usual.
    tg.push_text(4343, 8, "Bob", "hi");
    tg.wait_chat(4343, T, |m| m.len() == 1 && m[0].visible() == "echo: [Bob]: hi");
    for i in 0..3 {
        tg.push_text(4344, 9, "Owner", &format!("check {i}"));
    }
    tg.wait_chat(4344, T, |m| {
        m.len() == 3 && m[2].visible() == "echo: [Owner]: check 2"
    });
    // In a group the note says whom it is for; there, as in private, the day's rule
    // counts Ann's messages everywhere.
    let group = json!({"id": GROUP, "type": "supergroup", "title": "Team"});
    let from = |name: &str, id: i64| json!({"id": id, "is_bot": false, "first_name": name});
    for text in ["@test_bot a", "@test_bot b", "@test_bot c"] {
        tg.push_message(json!({"chat": group, "from": from("Carl", 10), "text": text}));
    }
    tg.push_message(json!({"chat": group, "from": from("Ann", 7), "text": "@test_bot me too"}));
    tg.push_message(json!({"chat": group, "from": from("Carl", 10), "text": "/start@test_bot"}));
    let msgs = tg.wait_chat(GROUP, T, |m| {
        m.len() == 4 && m.iter().any(|m| m.visible() == "echo: [Carl]: b")
    });
    let texts = shown(&msgs);
    assert_eq!(texts[..2], ["echo: [Carl]: a", "echo: [Carl]: b"], "{texts:?}");
    assert!(
        texts[2].starts_with("⚠️ Not passed on: Carl, you have sent 2 messages in the last hour"),
        "{texts:?}"
    );
    assert!(
        texts[3].starts_with("👋"),
        "Ann, told in private, is not told again: {texts:?}"
    );

    // An edit is a message too: Ann's, held back, stops nothing (no reply to its old words
    // is cancelled, nothing reaches the instance).
    let two = json!({"message_id": 10_000 + two_update, "chat": {"id": CHAT, "type": "private"},
        "from": {"id": 7, "is_bot": false, "first_name": "Ann"}});
    tg.push_edit(two, "two, edited");
    tg.push_message(
        json!({"chat": {"id": CHAT, "type": "private"}, "from": from("Ann", 7), "text": "/start"}),
    );
    tg.wait_chat(CHAT, T, |m| m.len() == 5);
    let before = s.gateway.as_ref().unwrap().log();
    assert!(
        before.contains(&format!(
            "message {} of user 7 not passed on",
            10_000 + two_update
        )) && !before.contains("was edited; its reply stops"),
        "a held-back edit stopped a reply: {before}"
    );

    // Killed and started again: the counts are where they were.
    s.gateway.as_mut().unwrap().kill9();
    s.start_gateway();
    let tg = &s.telegram;
    tg.push_text(CHAT, 7, "Ann", "five");
    tg.push_text(CHAT, 7, "Ann", "/start");
    let msgs = tg.wait_chat(CHAT, T, |m| m.len() == 6);
    assert!(
        msgs[4].visible().starts_with("👋") && msgs[5].visible().starts_with("👋"),
        "{msgs:?}"
    );
    assert_eq!(shown(&msgs[..4]), sorted, "nothing more for Ann's messages");
    tg.push_text(4343, 8, "Bob", "again");
    tg.wait_chat(4343, T, |m| m.len() == 2);
    tg.push_text(4345, 11, "Dave", "hello");
    tg.wait_chat(4345, T, |m| m.len() == 1);
    let asked: Vec<String> = s
        .llm
        .requests()
        .iter()
        .map(aegis_e2e::llm::last_user_text)
        .collect();
    assert_eq!(asked.len(), 2 + 1 + 3 + 2 + 1 + 1, "{asked:?}");
    for held in ["three", "four", "five", "me too", "[Carl]: c", "two, edited"] {
        assert!(
            !asked.iter().any(|a| a.contains(held)),
            "{held:?} reached the model: {asked:?}"
        );
    }
    let log = s.gateway.as_ref().unwrap().log();
    assert!(
        log.contains("of user 7 not passed on: 2 messages in 60 min, the rate_limit"),
        "{log}"
    );
    // --check says the rules, and how many are held back now: Ann, Carl, and Bob, who
    // has sent two (not Dave, who has sent one).
    let out = s.gateway_command().arg("--check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "rate_limit: 2 messages in 60 min, 50 in 1440 min per person (1 exempt); 3 held back now"
        ),
        "{stdout}"
    );
}

/// [ours] A background job's end reaches the chat as a message of its own, long after the
/// reply that started it: the agent (in serve, shell on) answers a message it made
/// itself, and the gateway sends that reply though no user message asked for it.
#[test]
fn a_background_jobs_end_reaches_the_chat_as_a_new_message() {
    let job = json!({"command": "sleep 1; echo built-ok", "background": true}).to_string();
    let llm = FakeLlm::scripted(vec![
        Reply::sse(aegis_e2e::llm::openai_tool_sse("", &[("b1", "bash", &job)], 100)),
        Reply::sse(openai_sse(&["Started; I will tell you."])),
        Reply::sse(openai_sse(&["The build is done."])),
    ]);
    let mut s = Stack::with_env("gw-job", llm, &[], &[("AEGIS_TOOLS", "all")]);
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s.telegram.push_text(CHAT, 7, "Ann", "build it and tell me");
    let msgs = s
        .telegram
        .wait_chat(CHAT, T, |m| m.iter().any(|m| m.visible() == "The build is done."));
    let texts: Vec<String> = msgs.iter().map(|m| m.visible()).collect();
    assert_eq!(
        texts,
        ["Started; I will tell you.", "The build is done."],
        "two messages, each once"
    );
    let said = aegis_e2e::llm::last_user_text(&s.llm.requests()[2]);
    assert!(
        said.contains("[Background job job-1 ended: exit status 0") && said.contains("built-ok"),
        "{said}"
    );
    let log = std::fs::read_to_string(s.instance_dir().join("workspace/.aegis/jobs/job-1.log")).unwrap();
    assert_eq!(log, "built-ok\n");
}
