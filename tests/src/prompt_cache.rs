//! Prompt caches as the providers document them, to measure what a sequence of requests
//! would read from one (the providers' `usage` says it; no local server can).
//!
//! Anthropic (Messages API): a request is its tool definitions, `system` blocks and
//! message content blocks, in that order. A block marked `cache_control` writes the prefix
//! that ends with it to the cache; a later request reads the longest prefix some earlier
//! mark wrote, found by looking back from each of its own marks over at most 20 blocks.
//! Prefixes under 1,024 tokens are not cached. Nothing is cached without marks. A written
//! prefix lives 5 minutes (`"ttl": "1h"`: an hour) from its last use; a write is billed at
//! 1.25 times the input price (an hour's at 2 times), a read at 0.1. At most 4 marks, and
//! one kept an hour never after one kept 5 minutes: the API refuses those requests.
//!
//! OpenAI (and the prefix caches of OpenAI-compatible servers): automatic; a request
//! reads the longest prefix it shares with an earlier one, in steps of 128 tokens, from
//! 1,024 tokens on.
//!
//! Sizes are counted in characters of the serialized blocks (4 to a token).

use std::collections::HashMap;

use serde_json::Value;

/// Characters per token, for the providers' thresholds.
const CHARS_PER_TOKEN: usize = 4;
const MIN_TOKENS: usize = 1024;
const LOOKBACK: usize = 20;

/// What a sequence of requests read from a cache, in characters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// Input sent.
    pub input: usize,
    /// Of it, read from the cache.
    pub read: usize,
    /// Of it, written to the cache (Claude bills it at 1.25 times).
    pub written: usize,
    /// Of what was written, kept an hour (billed at 2 times).
    pub written_hour: usize,
}

impl Usage {
    /// The share of input read from the cache, in percent.
    pub fn read_percent(&self) -> f64 {
        100.0 * self.read as f64 / self.input.max(1) as f64
    }

    /// What the input cost on Claude's prices, as a share of its price uncached.
    pub fn claude_cost(&self) -> f64 {
        let plain = self.input - self.read - self.written;
        let short = self.written - self.written_hour;
        let cost =
            plain as f64 + 0.1 * self.read as f64 + 1.25 * short as f64 + 2.0 * self.written_hour as f64;
        cost / self.input.max(1) as f64
    }
}

/// A prefix in Anthropic's cache.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Seconds it lives after its last use.
    ttl: u64,
    /// When it goes, in seconds on the caller's clock.
    expires: u64,
}

/// Anthropic's cache, fed one request body at a time.
#[derive(Debug, Default)]
pub struct Anthropic {
    written: HashMap<u64, Entry>,
    /// Totals so far.
    pub usage: Usage,
}

impl Anthropic {
    /// Count `body` (a Messages API request) in, all requests at one moment; what it read.
    pub fn request(&mut self, body: &Value) -> usize {
        self.request_at(body, 0)
    }

    /// Count `body` in, sent `now` (seconds, any origin, never going back); what it read.
    /// Panics with the API's words on a request the API would refuse.
    pub fn request_at(&mut self, body: &Value, now: u64) -> usize {
        if let Some(why) = anthropic_cache_refusal(body) {
            panic!("Anthropic refuses this request: {why}");
        }
        self.written.retain(|_, e| e.expires > now);
        let blocks = anthropic_blocks(body);
        let sizes: Vec<usize> = blocks.iter().map(|b| b.text.len()).collect();
        let prefix_len = |end: usize| sizes[..=end].iter().sum::<usize>();
        let hashes = prefix_hashes(blocks.iter().map(|b| b.text.as_str()));
        let marks: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].ttl.is_some()).collect();
        let mut read = 0;
        let mut used = None;
        for &m in &marks {
            for j in (m.saturating_sub(LOOKBACK)..=m).rev() {
                if self.written.contains_key(&hashes[j]) {
                    if prefix_len(j) > read {
                        read = prefix_len(j);
                        used = Some(hashes[j]);
                    }
                    break;
                }
            }
        }
        if let Some(e) = used.and_then(|h| self.written.get_mut(&h)) {
            e.expires = now + e.ttl;
        }
        // What each mark writes beyond what is covered already is billed at its rate.
        let (mut covered, mut written, mut written_hour) = (read, 0, 0);
        for &m in &marks {
            let (len, ttl) = (prefix_len(m), blocks[m].ttl.unwrap_or(300));
            if len < MIN_TOKENS * CHARS_PER_TOKEN {
                continue;
            }
            // A prefix still there is read, and keeps the time it was written with (how
            // the API treats an hour asked of a prefix kept 5 minutes is not documented;
            // counted against the longer kind).
            let entry = self.written.entry(hashes[m]).or_insert_with(|| {
                let new = len.saturating_sub(covered);
                written += new;
                if ttl > 300 {
                    written_hour += new;
                }
                Entry { ttl, expires: 0 }
            });
            entry.expires = entry.expires.max(now + entry.ttl);
            covered = covered.max(len);
        }
        self.usage.input += sizes.iter().sum::<usize>();
        self.usage.read += read;
        self.usage.written += written;
        self.usage.written_hour += written_hour;
        read
    }
}

/// The 400 Anthropic answers a request whose cache marks break its rules, in its words;
/// `None` for a request it takes.
pub fn anthropic_cache_refusal(body: &Value) -> Option<String> {
    let marked: Vec<Block> = anthropic_blocks(body)
        .into_iter()
        .filter(|b| b.ttl.is_some())
        .collect();
    if marked.len() > 4 {
        return Some(format!(
            "A maximum of 4 blocks with cache_control may be provided. Found {}.",
            marked.len()
        ));
    }
    if let Some(b) = marked.iter().find(|b| b.bad_ttl) {
        return Some(format!(
            "{}.cache_control.ttl: Input should be '5m' or '1h'",
            b.at
        ));
    }
    let first_short = marked.iter().position(|b| b.ttl == Some(300))?;
    let late = marked[first_short..].iter().find(|b| b.ttl == Some(3600))?;
    Some(format!(
        "{}.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that blocks are processed in the following order: `tools`, `system`, `messages`.",
        late.at
    ))
}

/// The Messages API request a router (OpenRouter) makes of a Chat Completions request for
/// Claude: the tools as Anthropic's, system messages as `system` blocks, each message's
/// parts as blocks (a string as one text block, an image's data URL as a base64 image),
/// tool calls as `tool_use` blocks, tool results as `tool_result` blocks of the user's
/// side, messages of the same side merged (the API wants them alternating). A mark on a
/// part stays on its block; one on a tool result's last part goes on its `tool_result`.
pub fn anthropic_of_openai(body: &Value) -> Value {
    use serde_json::json;
    let tools: Vec<Value> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let f = &t["function"];
            json!({"name": f["name"], "description": f["description"], "input_schema": f["parameters"]})
        })
        .collect();
    let mark_of = |part: &Value| part.get("cache_control").cloned();
    let text_blocks = |content: &Value| -> Vec<Value> {
        match content {
            Value::String(text) if text.is_empty() => Vec::new(),
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    let mut block = match p["type"].as_str() {
                        Some("image_url") => {
                            let url = p["image_url"]["url"].as_str().unwrap_or("");
                            let (head, data) = url.split_once(',').unwrap_or(("", url));
                            let media = head.trim_start_matches("data:").trim_end_matches(";base64");
                            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                        }
                        _ => json!({"type": "text", "text": p["text"]}),
                    };
                    if let Some(mark) = mark_of(p) {
                        block["cache_control"] = mark;
                    }
                    block
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut system = Vec::new();
    let mut sides: Vec<(String, Vec<Value>)> = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        let (role, blocks) = match m["role"].as_str().unwrap_or("") {
            "system" => {
                system.extend(text_blocks(&m["content"]));
                continue;
            }
            "tool" => {
                let parts = text_blocks(&m["content"]);
                let text: Vec<&str> = parts.iter().filter_map(|b| b["text"].as_str()).collect();
                let mut block = json!({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": text.join("")});
                if let Some(mark) = parts.last().and_then(mark_of) {
                    block["cache_control"] = mark;
                }
                ("user", vec![block])
            }
            "assistant" => {
                let mut blocks = text_blocks(&m["content"]);
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let input: Value =
                        serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("{}"))
                            .unwrap_or(json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
                }
                ("assistant", blocks)
            }
            _ => ("user", text_blocks(&m["content"])),
        };
        match sides.last_mut() {
            Some((r, existing)) if r == role => existing.extend(blocks),
            _ => sides.push((role.to_string(), blocks)),
        }
    }
    let messages: Vec<Value> = sides
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    json!({"model": body["model"], "tools": tools, "system": system, "messages": messages})
}

/// OpenAI's automatic cache, fed one request body at a time.
#[derive(Debug, Default)]
pub struct OpenAi {
    seen: Vec<String>,
    /// Totals so far.
    pub usage: Usage,
}

impl OpenAi {
    /// Count `body` (a Chat Completions request) in; what it read.
    pub fn request(&mut self, body: &Value) -> usize {
        // Tools, then the messages, as the cache key is built.
        let text = format!("{}{}", body["tools"], body["messages"]);
        let step = 128 * CHARS_PER_TOKEN;
        let shared = self
            .seen
            .iter()
            .map(|s| s.bytes().zip(text.bytes()).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        let read = if shared >= MIN_TOKENS * CHARS_PER_TOKEN {
            shared / step * step
        } else {
            0
        };
        self.usage.input += text.len();
        self.usage.read += read;
        self.seen.push(text);
        read
    }
}

/// A block of a Messages API request, as the cache sees it.
struct Block {
    /// Its JSON without its mark.
    text: String,
    /// Seconds its mark keeps the prefix (`None`: not marked).
    ttl: Option<u64>,
    /// Its mark asks for a `ttl` the API does not know.
    bad_ttl: bool,
    /// Where it is, in the API's error words (`messages.2.content.0`).
    at: String,
}

/// The blocks of a Messages API request in cache order.
fn anthropic_blocks(body: &Value) -> Vec<Block> {
    let mut out = Vec::new();
    let mut push = |v: &Value, at: String| {
        let mark = v.get("cache_control");
        let ttl = mark.map(|m| m["ttl"].as_str().unwrap_or("5m"));
        let mut plain = v.clone();
        if let Some(o) = plain.as_object_mut() {
            o.remove("cache_control");
        }
        out.push(Block {
            text: plain.to_string(),
            ttl: ttl.map(|t| if t == "1h" { 3600 } else { 300 }),
            bad_ttl: ttl.is_some_and(|t| t != "5m" && t != "1h"),
            at,
        });
    };
    for (i, t) in body["tools"].as_array().into_iter().flatten().enumerate() {
        push(t, format!("tools.{i}"));
    }
    match &body["system"] {
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .for_each(|(i, b)| push(b, format!("system.{i}"))),
        other => push(other, "system".into()),
    }
    // A string is short for one text block (the API reads both alike); each block is
    // counted with its message's role, as a change of speaker changes the prompt.
    for (i, m) in body["messages"].as_array().into_iter().flatten().enumerate() {
        let blocks = match &m["content"] {
            Value::Array(blocks) => blocks.clone(),
            text => vec![serde_json::json!({"type": "text", "text": text})],
        };
        for (j, mut b) in blocks.into_iter().enumerate() {
            b["role"] = m["role"].clone();
            push(&b, format!("messages.{i}.content.{j}"));
        }
    }
    out
}

/// A hash of each prefix: `[0..=i]` for every i.
fn prefix_hashes<'a>(blocks: impl Iterator<Item = &'a str>) -> Vec<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    blocks
        .map(|b| {
            for byte in b.bytes().chain([0xff]) {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(t: &str, marked: bool) -> Value {
        let mut b = json!({"type": "text", "text": t});
        if marked {
            b["cache_control"] = json!({"type": "ephemeral"});
        }
        b
    }

    #[test]
    fn claude_reads_only_what_a_mark_wrote_and_openai_any_shared_prefix() {
        let long = "x".repeat(5000);
        let first = json!({"system": [text(&long, true)], "messages": [{"role": "user", "content": "a"}]});
        let second = json!({"system": [text(&long, true)], "messages": [{"role": "user", "content": "b"}]});
        let mut c = Anthropic::default();
        assert_eq!(c.request(&first), 0);
        assert!(
            c.request(&second) >= 5000,
            "the system prompt was written by the first"
        );
        // A question marked as a block reads the same as the string it becomes later.
        let asked = json!({"system": [text(&long, true)], "messages": [{"role": "user", "content": [text("q", true), text("notes", false)]}]});
        let later = json!({"system": [text(&long, true)], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": [text("q2", true)]}]});
        let mut c = Anthropic::default();
        c.request(&asked);
        assert!(c.request(&later) > 5000, "the question's prefix was read");
        let unmarked = json!({"system": long, "messages": [{"role": "user", "content": "a"}]});
        let mut c = Anthropic::default();
        c.request(&unmarked);
        assert_eq!(c.request(&unmarked), 0, "nothing marked, nothing cached");
        let short = json!({"system": [text("tiny", true)], "messages": []});
        let mut c = Anthropic::default();
        c.request(&short);
        assert_eq!(c.request(&short), 0, "under 1,024 tokens");

        let mut o = OpenAi::default();
        let a = json!({"messages": [{"role": "system", "content": long}, {"role": "user", "content": "a"}]});
        let b = json!({"messages": [{"role": "system", "content": long}, {"role": "user", "content": "b"}]});
        assert_eq!(o.request(&a), 0);
        let read = o.request(&b);
        assert!(read >= 4096 && read % 512 == 0 && read <= 5100, "{read}");
    }

    #[test]
    fn a_router_turns_marked_message_parts_into_marked_blocks() {
        let mark = json!({"type": "ephemeral", "ttl": "1h"});
        let long = "x".repeat(5000);
        let ask = |q: &str, question_marked: bool| {
            let question = if question_marked {
                json!([{"type": "text", "text": q, "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "notes"}])
            } else {
                json!(q)
            };
            json!({"model": "anthropic/claude-sonnet-4.6",
            "tools": [{"type": "function", "function": {"name": "bash", "description": "d", "parameters": {}}}],
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": long, "cache_control": mark}]},
                {"role": "user", "content": question},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "a.txt", "cache_control": {"type": "ephemeral"}}]},
                {"role": "tool", "tool_call_id": "c2", "content": "b.txt"}
            ]})
        };
        let converted = anthropic_of_openai(&ask("q", true));
        assert_eq!(converted["tools"][0]["name"], "bash");
        assert_eq!(converted["system"][0]["cache_control"], mark);
        let m = &converted["messages"];
        assert_eq!(m[0]["content"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(m[1]["content"][0]["input"], json!({"command": "ls"}));
        assert_eq!(
            m.as_array().unwrap().len(),
            3,
            "both tool results on one user side: {m}"
        );
        assert_eq!(m[2]["content"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(m[2]["content"][1]["content"], "b.txt");
        assert_eq!(anthropic_cache_refusal(&converted), None);
        // The cache reads what the marks wrote, across the two dialects' shapes.
        let mut c = Anthropic::default();
        c.request(&converted);
        assert!(c.request(&anthropic_of_openai(&ask("q", false))) >= 5000);
    }

    #[test]
    fn claude_keeps_a_prefix_5_minutes_or_an_hour_from_its_last_use_and_bills_the_writes() {
        let long = "x".repeat(5000);
        let ask = |ttl: Option<&str>, q: &str| {
            let mut mark = json!({"type": "ephemeral"});
            if let Some(t) = ttl {
                mark["ttl"] = t.into();
            }
            json!({"system": [{"type": "text", "text": long, "cache_control": mark}],
                   "messages": [{"role": "user", "content": q}]})
        };
        let mut c = Anthropic::default();
        c.request_at(&ask(None, "a"), 1000);
        assert!(c.request_at(&ask(None, "b"), 1299) > 0, "4 min 59 s later");
        assert!(
            c.request_at(&ask(None, "c"), 1598) > 0,
            "the read kept it another 5 minutes"
        );
        assert_eq!(
            c.request_at(&ask(None, "d"), 1898),
            0,
            "gone after 5 minutes unused"
        );
        let mut c = Anthropic::default();
        c.request_at(&ask(Some("1h"), "a"), 0);
        assert!(c.request_at(&ask(Some("1h"), "b"), 3599) > 0);
        assert_eq!(c.request_at(&ask(Some("1h"), "c"), 3599 + 3600), 0);
        let u = c.usage;
        assert_eq!(u.written, u.written_hour, "all of it kept an hour");
        assert!(u.written > 2 * 5000 && u.read > 5000, "{u:?}");
        // Billing: two writes at 2 times, a read at 0.1, the rest at 1.
        let expected = (u.input - u.read - u.written) as f64 + 0.1 * u.read as f64 + 2.0 * u.written as f64;
        assert!((u.claude_cost() - expected / u.input as f64).abs() < 1e-9);
        // An hour asked of a prefix kept 5 minutes: read, not written again, still 5 minutes.
        let mut c = Anthropic::default();
        c.request_at(&ask(None, "a"), 0);
        c.request_at(&ask(Some("1h"), "b"), 10);
        assert_eq!(c.usage.written_hour, 0);
        assert_eq!(c.request_at(&ask(Some("1h"), "c"), 10 + 301), 0);
    }

    #[test]
    fn claude_refuses_more_than_4_marks_and_an_hour_after_5_minutes() {
        let block = |ttl: &str| json!({"type": "text", "text": "t", "cache_control": {"type": "ephemeral", "ttl": ttl}});
        let body = |system: Vec<Value>| json!({"system": system, "messages": [{"role": "user", "content": [block("5m")]}]});
        assert_eq!(
            anthropic_cache_refusal(&body(vec![block("1h"), block("1h")])),
            None
        );
        assert_eq!(
            anthropic_cache_refusal(&body(vec![block("1h"); 4])).unwrap(),
            "A maximum of 4 blocks with cache_control may be provided. Found 5."
        );
        let late = json!({"system": [block("5m")], "messages": [{"role": "user", "content": [text("a", false), block("1h")]}]});
        assert!(anthropic_cache_refusal(&late)
            .unwrap()
            .starts_with("messages.0.content.1.cache_control.ttl: a ttl='1h' cache_control block must not come after a ttl='5m'"));
        assert_eq!(
            anthropic_cache_refusal(&body(vec![block("2h")])).unwrap(),
            "system.0.cache_control.ttl: Input should be '5m' or '1h'"
        );
    }
}
