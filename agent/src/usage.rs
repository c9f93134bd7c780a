//! [ours] What the model was sent and wrote, in tokens, as the provider counted them: each
//! reply's total goes to the log, and every request is added to `.aegis/usage.json`, by
//! day (UTC) and model, so what an agent costs, and how much of its input the prompt cache
//! served, can be read without the provider's console. Upstream's agent counts nothing.
//!
//! The file is one JSON object, rewritten whole after each request (a few KB: 400 days
//! are kept, the oldest dropped first):
//! `{"2026-12-06": {"claude-sonnet-4-6": {"requests": 12, "input": 41234, "cache_read": 38002, "cache_write": 1204, "cache_write_1h": 900, "output": 612}}}`.
//! `input` is all of the input, what was read from and written to the cache included;
//! `cache_write_1h` is the part of `cache_write` kept an hour (billed at 2 times, not 1.25);
//! `cost_micro_usd`, where a provider says what it billed (OpenRouter), in millionths of a
//! dollar.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Days the file keeps.
const KEEP_DAYS: usize = 400;
/// Largest file read (400 days of a few models are well under 1 MB; the model can write
/// in `.aegis`, and a planted giant must not be read whole).
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// Tokens of one request, or a sum of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All of the input.
    pub input: u64,
    /// Of it, read from the prompt cache.
    pub cache_read: u64,
    /// Of it, written to the prompt cache (Anthropic).
    pub cache_write: u64,
    /// Of what was written, kept an hour (billed at 2 times the input price, the rest at
    /// 1.25).
    pub cache_write_1h: u64,
    /// Written by the model (its thoughts included).
    pub output: u64,
    /// What the request was billed, in millionths of a US dollar, where the provider says
    /// (OpenRouter's `usage.cost`); 0 where it does not.
    pub cost_micro_usd: u64,
    /// Web searches the provider ran for the model (Anthropic's web search tool), billed
    /// apart from the tokens.
    pub web_searches: u64,
}

impl Tokens {
    /// Nothing counted (the server sent no usage).
    pub fn is_empty(&self) -> bool {
        *self == Tokens::default()
    }

    /// `other` added (a server's counts are not trusted not to overflow).
    pub fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.cache_write_1h = self.cache_write_1h.saturating_add(other.cache_write_1h);
        self.output = self.output.saturating_add(other.output);
        self.cost_micro_usd = self.cost_micro_usd.saturating_add(other.cost_micro_usd);
        self.web_searches = self.web_searches.saturating_add(other.web_searches);
    }

    /// A Chat Completions `usage` object (the last chunk of a stream asked with
    /// `stream_options.include_usage`): `prompt_tokens` counts the cached ones too, which
    /// OpenAI names in `prompt_tokens_details.cached_tokens`, DeepSeek in
    /// `prompt_cache_hit_tokens`, Moonshot in `cached_tokens`; OpenRouter names what Claude
    /// wrote to its cache in `prompt_tokens_details.cache_write_tokens`.
    pub fn from_openai(u: &Value) -> Option<Tokens> {
        let cached = [
            &u["prompt_tokens_details"]["cached_tokens"],
            &u["prompt_cache_hit_tokens"],
            &u["cached_tokens"],
        ];
        Some(Tokens {
            input: Value::as_u64(&u["prompt_tokens"])?,
            cache_read: cached.into_iter().find_map(Value::as_u64).unwrap_or(0),
            // OpenRouter, for a model that bills writing its cache (Claude).
            cache_write: Value::as_u64(&u["prompt_tokens_details"]["cache_write_tokens"]).unwrap_or(0),
            output: Value::as_u64(&u["completion_tokens"]).unwrap_or(0),
            cost_micro_usd: Value::as_f64(&u["cost"])
                .filter(|c| c.is_finite() && *c > 0.0)
                .map_or(0, |c| (c * 1e6).round() as u64),
            ..Tokens::default()
        })
    }

    /// The `usage` of an Images or Audio API answer (`gpt-image-1`, the `gpt-4o`
    /// transcription models): `input_tokens`, `output_tokens`. `None` for one counted
    /// otherwise (`whisper-1`: `{"type": "duration", "seconds": 3}`).
    pub fn from_api(u: &Value) -> Option<Tokens> {
        Some(Tokens {
            input: Value::as_u64(&u["input_tokens"])?,
            output: Value::as_u64(&u["output_tokens"]).unwrap_or(0),
            ..Tokens::default()
        })
    }

    /// Take in a Messages API `usage` object: `message_start`'s, then `message_delta`'s,
    /// whose counts are running totals that replace the earlier ones. Anthropic's
    /// `input_tokens` leaves out what was read from and written to the cache.
    pub fn merge_anthropic(&mut self, u: &Value) {
        let cached = self.cache_read.saturating_add(self.cache_write);
        let uncached = Value::as_u64(&u["input_tokens"]).unwrap_or(self.input.saturating_sub(cached));
        self.cache_read = Value::as_u64(&u["cache_read_input_tokens"]).unwrap_or(self.cache_read);
        self.cache_write = Value::as_u64(&u["cache_creation_input_tokens"]).unwrap_or(self.cache_write);
        self.cache_write_1h = Value::as_u64(&u["cache_creation"]["ephemeral_1h_input_tokens"])
            .unwrap_or(self.cache_write_1h)
            .min(self.cache_write);
        self.input = uncached
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write);
        self.output = Value::as_u64(&u["output_tokens"]).unwrap_or(self.output);
        self.web_searches =
            Value::as_u64(&u["server_tool_use"]["web_search_requests"]).unwrap_or(self.web_searches);
    }
}

impl fmt::Display for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} input tokens", self.input)?;
        match (self.cache_read, self.cache_write) {
            (0, 0) => {}
            (r, 0) => write!(f, " ({r} from the cache)")?,
            (0, w) => write!(f, " ({w} written to the cache)")?,
            (r, w) => write!(f, " ({r} from the cache, {w} written to it)")?,
        }
        write!(f, ", {} output", self.output)?;
        if self.web_searches > 0 {
            write!(f, ", {}", searches(self.web_searches))?;
        }
        if self.cost_micro_usd > 0 {
            write!(f, ", {} billed", dollars(self.cost_micro_usd))?;
        }
        Ok(())
    }
}

/// `micros` millionths of a dollar for people, without floating point: to the cent from a
/// cent on (`$1.23`), below it to the hundredth of a cent (`$0.0042`).
fn dollars(micros: u64) -> String {
    if micros < 10_000 {
        format!("$0.{:04}", (micros + 50) / 100)
    } else {
        let cents = micros.saturating_add(5_000) / 10_000;
        format!("${}.{:02}", grouped(cents / 100), cents % 100)
    }
}

/// About how many tokens a Chat Completions request `body` holds: its text, tool calls
/// and tool definitions at 4 characters a token (fewer than a tokenizer finds in English
/// or JSON); images are left out, a server counts them its own way.
pub fn estimated_tokens(body: &Value) -> u64 {
    let chars = |s: &str| s.chars().count();
    let mut n = body.get("tools").map_or(0, |t| chars(&t.to_string()));
    for m in body["messages"].as_array().into_iter().flatten() {
        n += match &m["content"] {
            Value::String(s) => chars(s),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).map(chars).sum(),
            _ => 0,
        };
        n += m.get("tool_calls").map_or(0, |c| chars(&c.to_string()));
    }
    n as u64 / 4
}

/// Whether a server that counted `counted` input tokens of a request of about `sent`
/// read only part of it: at least 1,024 (a window that cuts still reads its fill; a few
/// servers leave what their cache served out of the count, and a message's new part is
/// mostly smaller) but less than three quarters of a request of 2,048 tokens or more
/// (`sent` counts fewer than tokenizers find, in English, JSON, code, Cyrillic or CJK
/// alike). Ollama cuts what does not fit its context window (4,096 tokens unless raised)
/// without a word.
pub fn cut_short(counted: u64, sent: u64) -> bool {
    counted >= 1024 && sent >= 2048 && counted.saturating_mul(4) < sent.saturating_mul(3)
}

/// Requests and their tokens added up (a model's of one day, a reply's), as the file
/// keeps them (flat: serde's `flatten` of a `Tokens` would cost the binary kilobytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Requests counted.
    pub requests: u64,
    /// Their input.
    pub input: u64,
    /// Of it, read from the prompt cache.
    pub cache_read: u64,
    /// Of it, written to the prompt cache.
    pub cache_write: u64,
    /// Of that, kept an hour.
    pub cache_write_1h: u64,
    /// Their output.
    pub output: u64,
    /// What they were billed, in millionths of a dollar, where the provider said (left
    /// out of the file while 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub cost_micro_usd: u64,
    /// Web searches the provider ran for the model (left out of the file while 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub web_searches: u64,
}

impl Totals {
    /// One request more.
    pub fn add(&mut self, tokens: &Tokens) {
        self.merge(&Totals {
            requests: 1,
            input: tokens.input,
            cache_read: tokens.cache_read,
            cache_write: tokens.cache_write,
            cache_write_1h: tokens.cache_write_1h,
            output: tokens.output,
            cost_micro_usd: tokens.cost_micro_usd,
            web_searches: tokens.web_searches,
        });
    }

    /// `other`'s requests added.
    fn merge(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        let mut t = self.tokens();
        t.add(&other.tokens());
        (
            self.input,
            self.cache_read,
            self.cache_write,
            self.cache_write_1h,
            self.output,
            self.cost_micro_usd,
            self.web_searches,
        ) = (
            t.input,
            t.cache_read,
            t.cache_write,
            t.cache_write_1h,
            t.output,
            t.cost_micro_usd,
            t.web_searches,
        );
    }

    /// The tokens of it all.
    pub fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            output: self.output,
            cost_micro_usd: self.cost_micro_usd,
            web_searches: self.web_searches,
        }
    }

    /// For people: `12 requests, 41,234 input tokens (92 % from the cache), 612 output`.
    fn grouped(&self) -> String {
        let t = self.tokens();
        let mut out = format!(
            "{} request{}, {} input tokens",
            grouped(self.requests),
            if self.requests == 1 { "" } else { "s" },
            grouped(t.input)
        );
        if t.cache_read > 0 {
            let share = 100 * u128::from(t.cache_read) / u128::from(t.input.max(1));
            out.push_str(&format!(" ({share} % from the cache)"));
        }
        out.push_str(&format!(", {} output", grouped(t.output)));
        if t.web_searches > 0 {
            out.push_str(&format!(", {}", searches(t.web_searches)));
        }
        if t.cost_micro_usd > 0 {
            out.push_str(&format!(", {} billed", dollars(t.cost_micro_usd)));
        }
        out
    }
}

/// `n` web searches, for people.
fn searches(n: u64) -> String {
    match n {
        1 => "1 web search".into(),
        n => format!("{} web searches", grouped(n)),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

type Days = BTreeMap<String, BTreeMap<String, Totals>>;

/// `.aegis/usage.json`, read at its first use (an idle agent never touches it), then
/// held in memory and written after each request.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    days: Mutex<Option<Days>>,
}

impl Ledger {
    /// The ledger of `workspace`.
    pub fn open(workspace: &Path) -> Ledger {
        Ledger {
            path: workspace.join(".aegis/usage.json"),
            days: Mutex::new(None),
        }
    }

    /// `f` on the days, read first if they have not been.
    fn with_days<R>(&self, f: impl FnOnce(&mut Days) -> R) -> R {
        let mut days = self.days.lock().unwrap_or_else(|p| p.into_inner());
        f(days.get_or_insert_with(|| read(&self.path)))
    }

    /// Add one request of `model`, made on `day` (`2026-12-06`), and write the file.
    pub fn record_on(&self, day: &str, model: &str, tokens: &Tokens) {
        self.with_days(|days| {
            days.entry(day.to_string())
                .or_default()
                .entry(model.to_string())
                .or_default()
                .add(tokens);
            while days.len() > KEEP_DAYS {
                days.pop_first();
            }
            let json = serde_json::to_vec(days).expect("totals serialise");
            if let Err(e) = tether::fsutil::replace(&self.path, &json) {
                log::warn!("cannot write {}: {e}", self.path.display());
            }
        });
    }

    /// Add one request of `model`, made today.
    pub fn record(&self, model: &str, tokens: &Tokens) {
        self.record_on(&today(), model, tokens);
    }

    /// The totals of each model on `day`.
    pub fn on_day(&self, day: &str) -> Vec<Totals> {
        self.with_days(|days| {
            days.get(day)
                .map(|d| d.values().copied().collect())
                .unwrap_or_default()
        })
    }

    /// What `/usage` answers on `today`: the totals of today, the last 7 and 30 days, and
    /// of each model over 30 days when there are several.
    pub fn summary(&self, today: &str) -> String {
        self.with_days(|days| summarize(days, today))
    }
}

/// The file at `path` as days: none when it is missing, or not a record (then set aside
/// as `usage.json.bad`, with a warning, not overwritten).
fn read(path: &Path) -> Days {
    let bytes = crate::regular::read(path, MAX_FILE + 1);
    let Ok(bytes) = bytes else {
        return Days::new();
    };
    parse(&bytes).unwrap_or_else(|e| {
        let aside = path.with_extension("json.bad");
        log::warn!(
            "{} is not a usage record ({e}); kept as {}, counting afresh",
            path.display(),
            aside.display()
        );
        let _ = std::fs::rename(path, &aside);
        Days::new()
    })
}

/// The `/usage` answer from `days` on `today`.
fn summarize(days: &Days, today: &str) -> String {
    let since = |n: u64| {
        let mut all = Totals::default();
        let mut models: BTreeMap<&str, Totals> = BTreeMap::new();
        let from = day_before(today, n - 1).unwrap_or_default();
        for (_, day) in days.range(from..=today.to_string()) {
            for (model, t) in day {
                all.merge(t);
                models.entry(model).or_default().merge(t);
            }
        }
        (all, models)
    };
    let (month, models) = since(30);
    if month.requests == 0 {
        return "No model requests counted in the last 30 days.".into();
    }
    let mut out = String::from("Model use, as the provider counted it (days in UTC):\n");
    for (label, t) in [
        ("today", since(1).0),
        ("last 7 days", since(7).0),
        ("last 30 days", month),
    ] {
        out.push_str(&format!("{label}: {}\n", t.grouped()));
    }
    if models.len() > 1 {
        out.push_str("\nBy model, last 30 days:\n");
        for (model, t) in models {
            out.push_str(&format!("{model}: {}\n", t.grouped()));
        }
    }
    out.trim_end().to_string()
}

/// Add the `usage` of an Images or Audio API `answer` (see [`Tokens::from_api`]) for
/// `model` to `ledger`, when there are both; the tokens it counts (none when it counts
/// otherwise), for the chat's limits.
pub fn record_answer(ledger: Option<&Ledger>, model: &str, answer: &Value) -> Tokens {
    let counted = answer.get("usage").and_then(Tokens::from_api).unwrap_or_default();
    if let Some(ledger) = ledger.filter(|_| !counted.is_empty()) {
        ledger.record(model, &counted);
    }
    counted
}

/// Today in UTC, as the file names days (`2026-12-06`).
pub fn today() -> String {
    tether::time::now_rfc3339()[..10].to_string()
}

/// The day `n` days before `day`.
fn day_before(day: &str, n: u64) -> Option<String> {
    let t = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).ok()?;
    let earlier = t.checked_sub(std::time::Duration::from_secs(n * 86_400))?;
    Some(tether::time::rfc3339(earlier)[..10].to_string())
}

/// `n` with its thousands apart (`41,234`).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The days of a ledger file.
fn parse(bytes: &[u8]) -> Result<Days, String> {
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("larger than {} MB", MAX_FILE / (1024 * 1024)));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_counts_cached_tokens_inside_the_prompt() {
        let u = json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 128}});
        assert_eq!(
            Tokens::from_openai(&u),
            Some(Tokens {
                input: 2006,
                cache_read: 1920,
                output: 300,
                ..Tokens::default()
            })
        );
        assert_eq!(
            Tokens::from_openai(&json!({"prompt_tokens": 5})).map(|t| t.output),
            Some(0)
        );
        assert_eq!(Tokens::from_openai(&json!(null)), None);
        let deepseek = json!({"prompt_tokens": 900, "completion_tokens": 20, "total_tokens": 920,
            "prompt_cache_hit_tokens": 768, "prompt_cache_miss_tokens": 132});
        assert_eq!(Tokens::from_openai(&deepseek).map(|t| t.cache_read), Some(768));
        let moonshot = json!({"prompt_tokens": 900, "completion_tokens": 20, "cached_tokens": 512});
        assert_eq!(Tokens::from_openai(&moonshot).map(|t| t.cache_read), Some(512));
        // Claude through OpenRouter: what was read and what was written, both inside the
        // prompt's count.
        let openrouter = json!({"prompt_tokens": 1500, "completion_tokens": 100, "total_tokens": 1600,
            "cost": 0.0021, "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 476}});
        assert_eq!(
            Tokens::from_openai(&openrouter),
            Some(Tokens {
                input: 1500,
                cache_read: 1024,
                cache_write: 476,
                output: 100,
                cost_micro_usd: 2100,
                ..Tokens::default()
            })
        );
        for odd in [json!(-1.0), json!("0.1"), json!(null)] {
            let u = json!({"prompt_tokens": 1, "cost": odd});
            assert_eq!(
                Tokens::from_openai(&u).map(|t| t.cost_micro_usd),
                Some(0),
                "{odd}"
            );
        }
        let image = json!({"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 12}});
        assert_eq!(
            Tokens::from_api(&image).map(|t| (t.input, t.output)),
            Some((12, 4160))
        );
        assert_eq!(Tokens::from_api(&json!({"type": "duration", "seconds": 3})), None);
        assert_eq!(Tokens::from_openai(&json!({"prompt_tokens": "many"})), None);
    }

    #[test]
    fn anthropic_counts_add_the_cache_to_the_input_and_later_totals_replace_earlier() {
        let mut t = Tokens::default();
        t.merge_anthropic(&json!({"input_tokens": 12, "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 9000, "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}));
        assert_eq!(t.cache_write_1h, 200, "of the 300 written");
        assert_eq!(
            (t.input, t.cache_read, t.cache_write, t.output),
            (9312, 9000, 300, 1)
        );
        // `message_delta`: the output so far; newer API versions repeat the input counts.
        t.merge_anthropic(&json!({"output_tokens": 412}));
        assert_eq!((t.input, t.output), (9312, 412));
        t.merge_anthropic(&json!({"input_tokens": 12, "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 9000, "output_tokens": 415}));
        assert_eq!(
            (t.input, t.cache_read, t.cache_write, t.output),
            (9312, 9000, 300, 415)
        );
        assert_eq!(
            t.to_string(),
            "9312 input tokens (9000 from the cache, 300 written to it), 415 output"
        );
        let plain = Tokens {
            input: 10,
            output: 2,
            ..Tokens::default()
        };
        assert_eq!(plain.to_string(), "10 input tokens, 2 output");
        // Anthropic's own web search, counted in the last `message_delta`.
        t.merge_anthropic(&json!({"output_tokens": 420, "server_tool_use": {"web_search_requests": 2}}));
        t.merge_anthropic(&json!({"output_tokens": 421}));
        assert_eq!(
            t.to_string(),
            "9312 input tokens (9000 from the cache, 300 written to it), 421 output, 2 web searches"
        );
    }

    #[test]
    fn the_ledger_adds_up_by_day_and_model_keeps_400_days_and_survives_a_restart() {
        let ws = crate::testutil::TempDir::new("usage");
        let t = Tokens {
            input: 100,
            cache_read: 80,
            cache_write: 10,
            cache_write_1h: 4,
            output: 7,
            cost_micro_usd: 0,
            web_searches: 0,
        };
        let ledger = Ledger::open(ws.path());
        ledger.record_on("2026-12-06", "m", &t);
        ledger.record_on("2026-12-06", "m", &t);
        ledger.record_on("2026-12-06", "other", &t);
        let again = Ledger::open(ws.path());
        again.record_on("2026-12-07", "m", &t);
        let file: Value =
            serde_json::from_slice(&std::fs::read(ws.path().join(".aegis/usage.json")).unwrap()).unwrap();
        assert_eq!(
            file["2026-12-06"]["m"],
            json!({"requests": 2, "input": 200, "cache_read": 160, "cache_write": 20, "cache_write_1h": 8, "output": 14}),
            "no cost where no provider said it"
        );
        assert_eq!(file["2026-12-06"]["other"]["requests"], 1);
        assert_eq!(file["2026-12-07"]["m"]["requests"], 1);
        let searched = Tokens { web_searches: 3, ..t };
        again.record_on("2026-12-07", "m", &searched);
        let file: Value =
            serde_json::from_slice(&std::fs::read(ws.path().join(".aegis/usage.json")).unwrap()).unwrap();
        assert_eq!(file["2026-12-07"]["m"]["web_searches"], 3);
        assert_eq!(
            Ledger::open(ws.path())
                .summary("2026-12-07")
                .matches("3 web searches")
                .count(),
            4,
            "today, 7 and 30 days, model m"
        );
        for d in 0..KEEP_DAYS + 5 {
            again.record_on(&format!("3000-{:04}", d), "m", &t);
        }
        let file: Value =
            serde_json::from_slice(&std::fs::read(ws.path().join(".aegis/usage.json")).unwrap()).unwrap();
        let days = file.as_object().unwrap();
        assert_eq!(days.len(), KEEP_DAYS);
        assert!(
            days.contains_key("3000-0404") && !days.contains_key("2026-12-06"),
            "the oldest go"
        );
    }

    #[test]
    fn usage_sums_today_the_week_and_the_month_and_each_model_when_there_are_several() {
        let ws = crate::testutil::TempDir::new("usage-summary");
        let ledger = Ledger::open(ws.path());
        assert_eq!(
            ledger.summary("2026-12-06"),
            "No model requests counted in the last 30 days."
        );
        let t = |input, cache_read, output| Tokens {
            input,
            cache_read,
            output,
            ..Tokens::default()
        };
        ledger.record_on("2026-12-06", "claude", &t(40_000, 36_000, 500));
        ledger.record_on("2026-12-06", "claude", &t(2_000, 0, 100));
        ledger.record_on("2026-12-01", "claude", &t(10_000, 0, 10));
        ledger.record_on("2026-11-07", "gpt", &t(1_000_000, 0, 1));
        ledger.record_on("2026-11-06", "gpt", &t(5, 0, 5)); // 31 days before: out
        ledger.record_on("2026-12-07", "claude", &t(9, 0, 9)); // after today: out
        assert_eq!(
            ledger.summary("2026-12-06"),
            "Model use, as the provider counted it (days in UTC):\n\
             today: 2 requests, 42,000 input tokens (85 % from the cache), 600 output\n\
             last 7 days: 3 requests, 52,000 input tokens (69 % from the cache), 610 output\n\
             last 30 days: 4 requests, 1,052,000 input tokens (3 % from the cache), 611 output\n\
             \n\
             By model, last 30 days:\n\
             claude: 3 requests, 52,000 input tokens (69 % from the cache), 610 output\n\
             gpt: 1 request, 1,000,000 input tokens, 1 output"
        );
        // What a router billed is added up and shown where there is any.
        let billed = |micros| Tokens {
            input: 1_000,
            cost_micro_usd: micros,
            ..Tokens::default()
        };
        ledger.record_on("2026-12-06", "anthropic/claude-sonnet-4.6", &billed(1_234_567));
        ledger.record_on("2026-12-06", "anthropic/claude-sonnet-4.6", &billed(5_000));
        let summary = ledger.summary("2026-12-06");
        assert!(
            summary.contains(
                "today: 4 requests, 44,000 input tokens (81 % from the cache), 600 output, $1.24 billed\n"
            ),
            "{summary}"
        );
        assert!(
            summary.contains(
                "anthropic/claude-sonnet-4.6: 2 requests, 2,000 input tokens, 0 output, $1.24 billed"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("claude: 3 requests, 52,000 input tokens (69 % from the cache), 610 output\n")
        );
        assert_eq!(
            billed(4_200).to_string(),
            "1000 input tokens, 0 output, $0.0042 billed"
        );
        assert_eq!(dollars(1), "$0.0000");
        assert_eq!(dollars(9_999), "$0.0100");
        assert_eq!(dollars(10_000), "$0.01");
        assert_eq!(dollars(1_234_567_890), "$1,234.57");
        assert_eq!(dollars(u64::MAX), "$18,446,744,073,709.55");
        assert_eq!(day_before("2026-03-01", 1).as_deref(), Some("2026-02-28"));
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn a_server_that_read_less_than_half_of_a_long_request_cut_it() {
        let text = "word ".repeat(4000); // 20,000 characters: about 5,000 tokens
        let body = json!({
            "messages": [
                {"role": "system", "content": text},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "bash", "arguments": "{}"}}]},
            ],
            "tools": [{"type": "function", "function": {"name": "bash"}}],
        });
        let sent = estimated_tokens(&body);
        assert!((5000..5100).contains(&sent), "the image is not counted: {sent}");
        assert!(cut_short(2048, sent), "Ollama's window cut it");
        assert!(cut_short(3700, sent));
        assert!(
            !cut_short(3800, sent),
            "read in full, by a tokenizer that counts fewer"
        );
        assert!(!cut_short(10, 2000), "too short to tell");
        assert!(
            !cut_short(300, sent),
            "a new part only: a server counting without its cache"
        );
    }

    #[test]
    fn counts_near_the_top_of_u64_saturate() {
        let mut t = Tokens {
            input: u64::MAX - 1,
            ..Tokens::default()
        };
        t.add(&Tokens {
            input: 5,
            output: 1,
            ..Tokens::default()
        });
        assert_eq!((t.input, t.output), (u64::MAX, 1));
        let mut a = Tokens::default();
        a.merge_anthropic(&json!({"input_tokens": u64::MAX, "cache_read_input_tokens": 7}));
        assert_eq!(a.input, u64::MAX);
        assert!(parse(&vec![b' '; MAX_FILE as usize + 1])
            .unwrap_err()
            .contains("larger than 4 MB"));
    }

    #[test]
    fn a_file_that_is_not_a_ledger_is_set_aside_not_overwritten() {
        let ws = crate::testutil::TempDir::new("usage-bad");
        let path = ws.path().join(".aegis/usage.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{\"2026-12-06\": [1, 2]}").unwrap();
        let ledger = Ledger::open(ws.path());
        assert!(path.exists(), "read at its first use, not at start");
        ledger.record_on("2026-12-06", "m", &Tokens::default());
        assert_eq!(
            std::fs::read(path.with_extension("json.bad")).unwrap(),
            b"{\"2026-12-06\": [1, 2]}"
        );
        let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(file["2026-12-06"]["m"]["requests"], 1);
    }

    proptest::proptest! {
        /// Whatever the file or a server's usage object holds, reading it never panics, and
        /// a record read back is the record written.
        #[test]
        fn any_bytes_read_as_a_record_or_an_error(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            n in proptest::num::u64::ANY,
            day in "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        ) {
            let _ = parse(&bytes);
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let _ = Tokens::from_openai(&v);
                Tokens::default().merge_anthropic(&v);
            }
            let mut days = Days::new();
            let t = Tokens { input: n, cache_read: n / 2, cache_write: n / 3, cache_write_1h: n / 4, output: 1, cost_micro_usd: n / 5, web_searches: n / 6 };
            days.entry(day).or_default().entry("m".into()).or_default().add(&t);
            let json = serde_json::to_vec(&days).unwrap();
            proptest::prop_assert_eq!(parse(&json).unwrap(), days);
        }
    }
}
