//! Prompt caches as the providers document them, to measure what a sequence of requests
//! would read from one (the providers' `usage` says it; no local server can).
//!
//! Anthropic (Messages API): a request is its tool definitions, `system` blocks and
//! message content blocks, in that order. A block marked `cache_control` writes the prefix
//! that ends with it to the cache; a later request reads the longest prefix some earlier
//! mark wrote, found by looking back from each of its own marks over at most 20 blocks.
//! Prefixes under 1,024 tokens are not cached. Nothing is cached without marks.
//!
//! OpenAI (and the prefix caches of OpenAI-compatible servers): automatic; a request
//! reads the longest prefix it shares with an earlier one, in steps of 128 tokens, from
//! 1,024 tokens on.
//!
//! Sizes are counted in characters of the serialized blocks (4 to a token).

use std::collections::HashSet;

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
}

impl Usage {
    /// The share of input read from the cache, in percent.
    pub fn read_percent(&self) -> f64 {
        100.0 * self.read as f64 / self.input.max(1) as f64
    }
}

/// Anthropic's cache, fed one request body at a time.
#[derive(Debug, Default)]
pub struct Anthropic {
    written: HashSet<u64>,
    /// Totals so far.
    pub usage: Usage,
}

impl Anthropic {
    /// Count `body` (a Messages API request) in; what it read.
    pub fn request(&mut self, body: &Value) -> usize {
        let blocks = anthropic_blocks(body);
        let sizes: Vec<usize> = blocks.iter().map(|(text, _)| text.len()).collect();
        let prefix_len = |end: usize| sizes[..=end].iter().sum::<usize>();
        let hashes = prefix_hashes(blocks.iter().map(|(t, _)| t.as_str()));
        let marks: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].1).collect();
        let mut read = 0;
        for &m in &marks {
            for j in (m.saturating_sub(LOOKBACK)..=m).rev() {
                if self.written.contains(&hashes[j]) {
                    read = read.max(prefix_len(j));
                    break;
                }
            }
        }
        let mut written = 0;
        for &m in &marks {
            let len = prefix_len(m);
            if len >= MIN_TOKENS * CHARS_PER_TOKEN && self.written.insert(hashes[m]) {
                written = written.max(len.saturating_sub(read));
            }
        }
        self.usage.input += sizes.iter().sum::<usize>();
        self.usage.read += read;
        self.usage.written += written;
        read
    }
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

/// The blocks of a Messages API request in cache order, each with whether it is marked.
fn anthropic_blocks(body: &Value) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut push = |v: &Value| {
        let marked = v.get("cache_control").is_some();
        let mut plain = v.clone();
        if let Some(o) = plain.as_object_mut() {
            o.remove("cache_control");
        }
        out.push((plain.to_string(), marked));
    };
    for t in body["tools"].as_array().into_iter().flatten() {
        push(t);
    }
    match &body["system"] {
        Value::Array(blocks) => blocks.iter().for_each(&mut push),
        other => push(other),
    }
    // A string is short for one text block (the API reads both alike); each block is
    // counted with its message's role, as a change of speaker changes the prompt.
    for m in body["messages"].as_array().into_iter().flatten() {
        let blocks = match &m["content"] {
            Value::Array(blocks) => blocks.clone(),
            text => vec![serde_json::json!({"type": "text", "text": text})],
        };
        for b in blocks {
            let mut b = b;
            b["role"] = m["role"].clone();
            push(&b);
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
}
