//! End-to-end proof over the whole kit (gateway + serve + agent + fake Telegram and LLM):
//! load, a kill -9 of each process mid-reply, LLM faults, Telegram 429 storms, and a
//! sessions folder that cannot be written.

use std::time::{Duration, Instant};

use aegis_e2e::llm::{last_user_text, openai_sse, End, FakeLlm, Reply};
use aegis_e2e::stack::{Stack, T};
use aegis_e2e::telegram::Fault;
use serde_json::json;

fn with_gateway(mut s: Stack) -> Stack {
    s.write_gateway_config(json!(["*"]));
    s.start_gateway();
    s
}

/// Replies: a first request that streams "partial " then hangs, then full answers.
fn hanging_then_full() -> FakeLlm {
    FakeLlm::scripted(vec![
        Reply::stalls_after("partial "),
        Reply::sse(openai_sse(&["the full ", "answer"])),
    ])
}

#[test]
fn hundred_chats_at_once_each_get_every_reply_once_in_order() {
    let llm = FakeLlm::prefixing("re: ", Duration::from_millis(20));
    let s = with_gateway(Stack::new("e2e-hundred", llm, &[]));
    for round in 0..2 {
        for chat in 0..100 {
            s.telegram
                .push_text(1000 + chat, chat, "U", &format!("m{chat}.{round}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for chat in 0..100i64 {
        let left = deadline.saturating_duration_since(Instant::now());
        let want = vec![format!("re: [U]: m{chat}.0"), format!("re: [U]: m{chat}.1")];
        s.telegram.wait_chat(1000 + chat, left, |m| {
            m.iter().map(|m| m.visible()).collect::<Vec<_>>() == want
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    for chat in 0..100 {
        assert_eq!(
            s.telegram.messages(1000 + chat).len(),
            2,
            "chat {chat} got an extra message"
        );
    }
    assert_eq!(s.llm.requests().len(), 200);
}

#[test]
fn agent_killed_mid_reply_the_same_message_gets_the_full_answer() {
    let s = with_gateway(Stack::new("e2e-kill-agent", hanging_then_full(), &[]));
    s.telegram.push_text(7, 1, "Ann", "question");
    s.telegram.wait_chat(7, T, |m| m.len() == 1);
    let pid = s.agent_pid().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let msgs = s
        .telegram
        .wait_chat(7, T, |m| m.len() == 1 && m[0].visible() == "the full answer");
    assert_eq!(msgs.len(), 1);
    assert_eq!(s.llm.requests().len(), 2);
}

#[test]
fn serve_killed_mid_reply_the_message_is_answered_after_restart() {
    let mut s = with_gateway(Stack::new("e2e-kill-serve", hanging_then_full(), &[]));
    s.telegram.push_text(7, 1, "Ann", "question");
    s.telegram.wait_chat(7, T, |m| m.len() == 1);
    s.serve.kill9();
    s.serve = aegis_e2e::stack::start_serve(&s.home, &s.socket, &[]);
    let msgs = s
        .telegram
        .wait_chat(7, T, |m| m.len() == 1 && m[0].visible() == "the full answer");
    assert_eq!(msgs.len(), 1, "finished in the message already on screen");
    // The history holds the question once and the answer once.
    let hist = std::fs::read_to_string(s.instance_dir().join("workspace/sessions/telegram_7.jsonl")).unwrap();
    assert_eq!(hist.matches("question").count(), 1, "{hist}");
    assert_eq!(hist.matches("the full answer").count(), 1, "{hist}");
}

#[test]
fn llm_faults_each_end_with_a_clear_message() {
    let llm = FakeLlm::with(|req| match last_user_text(req).as_str() {
        t if t.ends_with("500") => Reply::server_error(),
        t if t.ends_with("529") => Reply::overloaded(),
        t if t.ends_with("429") => Reply::rate_limited(0),
        t if t.ends_with("slow") => Reply::silent(),
        t if t.ends_with("cut") => Reply::Sse {
            pieces: openai_sse(&["half"])[..2].to_vec(),
            delay: Duration::ZERO,
            end: End::Cut,
        },
        _ => Reply::sse(vec!["data: {broken\n\n".into()]),
    });
    let s = with_gateway(Stack::with_env(
        "e2e-llm-faults",
        llm,
        &[],
        &[("AEGIS_LLM_RETRIES", "2"), ("AEGIS_LLM_READ_TIMEOUT", "1")],
    ));
    let cases = [
        ("500", "unavailable"),
        ("529", "overloaded"),
        ("429", "rate-limiting"),
        ("slow", "stopped responding"),
        ("cut", "interrupted"),
        ("malformed", "interrupted"),
    ];
    for (i, (trigger, _)) in cases.iter().enumerate() {
        s.telegram.push_text(100 + i as i64, 1, "Ann", trigger);
    }
    for (i, (trigger, want)) in cases.iter().enumerate() {
        let msgs = s.telegram.wait_chat(100 + i as i64, T, |m| {
            m.last().is_some_and(|m| m.visible().contains("⚠️"))
        });
        assert!(
            msgs.last().unwrap().visible().contains(want),
            "{trigger}: {:?}",
            msgs.last().unwrap().visible()
        );
    }
}

#[test]
fn a_telegram_429_storm_delays_but_never_loses_the_final_text() {
    let llm = FakeLlm::scripted(vec![Reply::Sse {
        pieces: openai_sse(&["a ", "b ", "c ", "d"]),
        delay: Duration::from_millis(400),
        end: End::Finish,
    }]);
    let s = with_gateway(Stack::new("e2e-429-storm", llm, &[]));
    s.telegram.fail_next("sendMessage", Fault::RetryAfter(1));
    for _ in 0..4 {
        s.telegram.fail_next("editMessageText", Fault::RetryAfter(1));
    }
    s.telegram.fail_next("editMessageText", Fault::BadGateway);
    s.telegram.push_text(9, 1, "Ann", "go");
    let msgs = s
        .telegram
        .wait_chat(9, T, |m| m.len() == 1 && m[0].visible() == "a b c d");
    assert_eq!(msgs.len(), 1);
    let retried = s.telegram.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(retried, 5);
}

#[test]
fn unwritable_sessions_give_a_clear_error_and_the_reply_still_arrives() {
    let s = with_gateway(Stack::new("e2e-disk", FakeLlm::echo_openai(), &[]));
    let sessions = s.instance_dir().join("workspace/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    // Disk full: every write to this session's file fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", sessions.join("telegram_11.jsonl")).unwrap();
    s.telegram.push_text(11, 1, "Ann", "full disk?");
    s.telegram.wait_chat(11, T, |m| {
        m.len() == 1 && m[0].visible() == "echo: [Ann]: full disk?"
    });
    let log = std::fs::read_to_string(s.instance_dir().join("instance.log")).unwrap();
    assert!(log.contains("No space left on device"), "the agent says why");
    // A sessions "folder" that is not a folder (read-only media behave alike).
    std::fs::remove_file(sessions.join("telegram_11.jsonl")).unwrap();
    std::fs::remove_dir(&sessions).unwrap();
    std::fs::write(&sessions, "not a folder").unwrap();
    s.telegram.push_text(12, 1, "Ann", "still?");
    s.telegram
        .wait_chat(12, T, |m| m.len() == 1 && m[0].visible() == "echo: [Ann]: still?");
    assert!(s.agent_pid().is_some(), "the agent did not crash");
}
