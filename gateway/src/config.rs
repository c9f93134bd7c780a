//! Gateway configuration (PROTOCOL.md §7): `~/.aegis/gateway.json` or
//! `AEGIS_GATEWAY_CONFIG`, with environment overrides. One bot:
//! `{"telegram": {"bot_token_secret": "TELEGRAM_BOT_TOKEN", "instance": "my-agent", "allowed_chats": ["*"]}}`;
//! several: `"telegram"` may be a list of such objects. Errors name the file and field.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One bot and the instance it fronts.
#[derive(Debug, Clone, PartialEq)]
pub struct BotConfig {
    /// Where the token comes from.
    pub token: TokenSource,
    /// Instance handle or id.
    pub instance: String,
    /// Allowed chat ids; `None` means every chat (`"*"`).
    pub allowed_chats: Option<Vec<i64>>,
    /// Bot API base URL.
    pub api_url: String,
    /// In groups: answer only messages addressed to the bot (`false`), or every one.
    pub group_all: bool,
    /// Drafts or edits (`stream_mode`).
    pub stream_mode: crate::render::StreamMode,
    /// Which finished replies are rich messages (`rich_messages`).
    pub rich_mode: crate::render::RichMode,
    /// Telegram users who may run shell commands in the instance (`/exec`); `None` means
    /// every user of an allowed chat (`"*"`), empty (the default) no one.
    pub exec_users: Option<Vec<i64>>,
    /// A message its sender edits is answered again (`edited_messages`: `answer`), or
    /// the edit goes unseen (`ignore`, as upstream).
    pub answer_edits: bool,
    /// [ours] How many messages each person may send the agent (`rate_limit`,
    /// `rate_limit_exempt`); no rules by default.
    pub rate: crate::rate::RateLimit,
    /// [ours] The most the instance's `inbox/` may hold, in bytes (`inbox_max_mb`): a
    /// file past it is not saved, and the model is told why.
    pub inbox_max: u64,
}

/// Token source; `Debug` never shows an inline token.
#[derive(Clone, PartialEq)]
pub enum TokenSource {
    /// Inline in the config or `TELEGRAM_BOT_TOKEN`.
    Inline(String),
    /// Name of an aegis secret.
    Secret(String),
    /// Per-instance mode: the environment variable `telegram.bot_token_env` names
    /// (default `TELEGRAM_BOT_TOKEN`), with its value.
    Env(String, String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            TokenSource::Secret(n) => write!(f, "Secret({n:?})"),
            TokenSource::Env(n, _) => write!(f, "Env({n:?})"),
        }
    }
}

/// Per-instance mode of current AegisVM: `AEGIS_INSTANCE` names the one instance this
/// gateway serves; its config is `~/.aegis/kits/<handle>/gateway.json`.
pub fn per_instance() -> Option<String> {
    env("AEGIS_INSTANCE")
}

impl BotConfig {
    /// Whether messages from `chat` are handled.
    pub fn allows(&self, chat: i64) -> bool {
        self.allowed_chats.as_ref().is_none_or(|ids| ids.contains(&chat))
    }

    /// Whether `user` may use `/exec`.
    pub fn may_exec(&self, user: i64) -> bool {
        self.exec_users.as_ref().is_none_or(|ids| ids.contains(&user))
    }
}

/// A configuration problem, naming file and field.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The config file path: `--config`, else `AEGIS_GATEWAY_CONFIG`, else
/// `~/.aegis/kits/<handle>/gateway.json` in per-instance mode, else `~/.aegis/gateway.json`.
pub fn path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os("AEGIS_GATEWAY_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| match per_instance() {
        Some(handle) => tether::paths::aegis_home()
            .join("kits")
            .join(handle)
            .join("gateway.json"),
        None => tether::paths::aegis_home().join("gateway.json"),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Read the file (if any) and apply the environment. A missing file is fine when the
/// environment supplies a token and an instance.
pub fn load(path: &Path) -> Result<Vec<BotConfig>, ConfigError> {
    let at = |field: &str, why: &str| ConfigError(format!("{}: {field}: {why}", path.display()));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
    };
    let entries: Vec<Value> = match &text {
        None => vec![Value::Object(Default::default())],
        Some(t) => {
            let v: Value = serde_json::from_str(t)
                .map_err(|e| ConfigError(format!("{}: invalid JSON: {e}", path.display())))?;
            match v.get("telegram") {
                Some(Value::Object(_)) => vec![v["telegram"].clone()],
                Some(Value::Array(a)) if !a.is_empty() => a.clone(),
                Some(_) => return Err(at("telegram", "must be an object or a non-empty list of objects")),
                None => return Err(at("telegram", "missing")),
            }
        }
    };
    let single = entries.len() == 1;
    let mut bots = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let field = |f: &str| {
            if single {
                format!("telegram.{f}")
            } else {
                format!("telegram[{i}].{f}")
            }
        };
        if !e.is_object() {
            return Err(at(field("").trim_end_matches('.'), "must be an object"));
        }
        let s = |f: &str| -> Result<Option<String>, ConfigError> {
            match e.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(x)) if !x.trim().is_empty() => Ok(Some(x.trim().to_string())),
                Some(_) => Err(at(&field(f), "must be a non-empty string")),
            }
        };
        // The environment overrides the single-bot form only; a list is explicit.
        let over = |var: &str, v: Option<String>| if single { env(var).or(v) } else { v };
        let env_token = if single { env("TELEGRAM_BOT_TOKEN") } else { None };
        let env_secret = if single {
            env("TELEGRAM_BOT_TOKEN_SECRET")
        } else {
            None
        };
        let instance_mode = per_instance();
        let token = if instance_mode.is_some()
            && e.get("bot_token").is_none()
            && e.get("bot_token_secret").is_none()
        {
            let var = s("bot_token_env")?.unwrap_or_else(|| "TELEGRAM_BOT_TOKEN".into());
            let value = env(&var).ok_or_else(|| {
                at(
                    &field("bot_token_env"),
                    &format!("the variable {var} (the bot token) is not set"),
                )
            })?;
            TokenSource::Env(var, value)
        } else if let Some(t) = env_token {
            TokenSource::Inline(t)
        } else if let Some(n) = env_secret.or(s("bot_token_secret")?) {
            TokenSource::Secret(n)
        } else if let Some(t) = s("bot_token")? {
            TokenSource::Inline(t)
        } else {
            return Err(at(
                &field("bot_token_secret"),
                "missing (set bot_token_secret or bot_token, or TELEGRAM_BOT_TOKEN / TELEGRAM_BOT_TOKEN_SECRET)",
            ));
        };
        let instance = match &instance_mode {
            // The instance is implied; a different one in the file is a mistake.
            Some(handle) => match s("instance")? {
                Some(other) if &other != handle => {
                    return Err(at(
                        &field("instance"),
                        &format!("{other:?}, but this gateway serves {handle:?} (AEGIS_INSTANCE)"),
                    ))
                }
                _ => handle.clone(),
            },
            None => over("AEGIS_GATEWAY_INSTANCE", s("instance")?)
                .ok_or_else(|| at(&field("instance"), "missing (or set AEGIS_GATEWAY_INSTANCE)"))?,
        };
        let allowed_chats = ids(e.get("allowed_chats"), "chat", &|why| {
            at(&field("allowed_chats"), why)
        })?;
        let exec_users = ids(e.get("exec_users"), "user", &|why| at(&field("exec_users"), why))?;
        let api_url =
            over("TELEGRAM_API_URL", s("api_url")?).unwrap_or_else(|| "https://api.telegram.org".into());
        use crate::render::{RichMode, StreamMode};
        let pick = |name: &str, why: String| at(&field(name), &why);
        let group_all = one_of(s("group_mode")?, &[("mention", false), ("all", true)])
            .map_err(|w| pick("group_mode", w))?;
        let modes = [
            ("auto", StreamMode::Auto),
            ("draft", StreamMode::Draft),
            ("edit", StreamMode::Edit),
        ];
        let stream_mode = one_of(s("stream_mode")?, &modes).map_err(|w| pick("stream_mode", w))?;
        let rich = [
            ("auto", RichMode::Auto),
            ("always", RichMode::Always),
            ("off", RichMode::Off),
        ];
        let rich_mode = one_of(s("rich_messages")?, &rich).map_err(|w| pick("rich_messages", w))?;
        let answer_edits = one_of(s("edited_messages")?, &[("answer", true), ("ignore", false)])
            .map_err(|w| pick("edited_messages", w))?;
        let rules = rules(e.get("rate_limit"), &|why| at(&field("rate_limit"), why))?;
        let exempt = ids(e.get("rate_limit_exempt"), "user", &|why| {
            at(&field("rate_limit_exempt"), why)
        })?
        .ok_or_else(|| {
            at(
                &field("rate_limit_exempt"),
                "\"*\" would exempt everyone: leave rate_limit out instead",
            )
        })?;
        let inbox_max = match e.get("inbox_max_mb") {
            None | Some(Value::Null) => crate::inbox::DEFAULT_MAX_TOTAL,
            Some(v) => match v.as_u64().filter(|mb| (1..=1_048_576).contains(mb)) {
                Some(mb) => mb * 1024 * 1024,
                None => {
                    return Err(at(
                        &field("inbox_max_mb"),
                        &format!("{v}: a whole number of megabytes from 1 to 1048576"),
                    ))
                }
            },
        };
        bots.push(BotConfig {
            token,
            instance,
            allowed_chats,
            api_url,
            group_all,
            stream_mode,
            rich_mode,
            exec_users,
            answer_edits,
            rate: crate::rate::RateLimit { rules, exempt },
            inbox_max,
        });
    }
    Ok(bots)
}

/// `rate_limit`: one rule `{"messages": 20, "minutes": 60}` or a list of them; absent,
/// none.
fn rules(v: Option<&Value>, at: &dyn Fn(&str) -> ConfigError) -> Result<Vec<crate::rate::Rule>, ConfigError> {
    use crate::rate::{Rule, MAX_MESSAGES, MAX_MINUTES, MAX_RULES};
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.as_slice(),
        Some(one @ Value::Object(_)) => std::slice::from_ref(one),
        Some(_) => {
            return Err(at(
                "must be {\"messages\": N, \"minutes\": M} or a list of such rules",
            ))
        }
    };
    if items.len() > MAX_RULES {
        return Err(at(&format!("{} rules; {MAX_RULES} at most", items.len())));
    }
    let number = |rule: &Value, name: &str, max: u32| -> Result<u32, ConfigError> {
        let n = rule
            .get(name)
            .ok_or_else(|| at(&format!("a rule without {name:?}")))?;
        n.as_u64()
            .filter(|n| (1..=u64::from(max)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| at(&format!("{name}: {n} is not a whole number from 1 to {max}")))
    };
    items
        .iter()
        .map(|rule| {
            let fields = rule
                .as_object()
                .ok_or_else(|| at("each rule is {\"messages\": N, \"minutes\": M}"))?;
            if let Some(other) = fields
                .keys()
                .find(|k| !matches!(k.as_str(), "messages" | "minutes"))
            {
                return Err(at(&format!(
                    "{other:?} is not a field of a rule (messages, minutes)"
                )));
            }
            Ok(Rule {
                messages: number(rule, "messages", MAX_MESSAGES)?,
                minutes: number(rule, "minutes", MAX_MINUTES)?,
            })
        })
        .collect()
}

/// The value of the word `given` names among `words` (the first is the default, taken
/// when none is given), or why it names none.
fn one_of<T: Copy>(given: Option<String>, words: &[(&str, T)]) -> Result<T, String> {
    let Some(given) = given else {
        return Ok(words[0].1);
    };
    if let Some((_, value)) = words.iter().find(|(w, _)| *w == given) {
        return Ok(*value);
    }
    let quoted: Vec<String> = words.iter().map(|(w, _)| format!("{w:?}")).collect();
    let (last, rest) = quoted.split_last().expect("a word at least");
    let mut choices = rest.to_vec();
    choices[0].push_str(" (default)");
    Err(format!("{given:?}: use {} or {last}", choices.join(", ")))
}

/// A list of Telegram ids (`allowed_chats`, `exec_users`): numbers or numeric strings, or
/// `"*"` for all (`None`); absent means none.
fn ids(
    v: Option<&Value>,
    what: &str,
    at: &dyn Fn(&str) -> ConfigError,
) -> Result<Option<Vec<i64>>, ConfigError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(at("must be a list")),
    };
    let mut ids = Vec::new();
    let mut all = false;
    for item in items {
        match item {
            Value::String(s) if s == "*" => all = true,
            Value::String(s) => ids.push(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| at(&format!("{s:?} is not a {what} id or \"*\"")))?,
            ),
            Value::Number(n) => ids.push(
                n.as_i64()
                    .ok_or_else(|| at(&format!("{what} ids are integers")))?,
            ),
            _ => return Err(at(&format!("entries are {what} ids or \"*\""))),
        }
    }
    Ok(if all { None } else { Some(ids) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file removed when dropped (also when the test fails).
    struct File(PathBuf);

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    impl std::ops::Deref for File {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    fn write(name: &str, text: &str) -> File {
        let p = std::env::temp_dir().join(format!("gw-config-{}-{name}.json", std::process::id()));
        std::fs::write(&p, text).unwrap();
        File(p)
    }

    // Environment overrides are covered by the end-to-end tests, which run the binary
    // with a controlled environment; these tests assume the variables are unset.

    #[test]
    fn the_documented_single_bot_form() {
        let p = write(
            "single",
            r#"{"telegram":{"bot_token_secret":"TELEGRAM_BOT_TOKEN","instance":"my-agent","allowed_chats":["*"]}}"#,
        );
        let bots = load(&p).unwrap();
        assert_eq!(bots.len(), 1);
        assert_eq!(bots[0].token, TokenSource::Secret("TELEGRAM_BOT_TOKEN".into()));
        assert_eq!(bots[0].instance, "my-agent");
        assert!(bots[0].allows(12345));
        assert_eq!(bots[0].api_url, "https://api.telegram.org");
    }

    #[test]
    fn a_list_of_bots_and_chat_id_filters() {
        let p = write(
            "list",
            r#"{"telegram":[{"bot_token":"1:a","instance":"a","allowed_chats":["42", -100]},{"bot_token":"2:b","instance":"b"}]}"#,
        );
        let bots = load(&p).unwrap();
        assert_eq!(bots.len(), 2);
        assert!(bots[0].allows(42) && bots[0].allows(-100) && !bots[0].allows(7));
        assert!(!bots[1].allows(7), "no allowed_chats means no chat is allowed");
        assert_eq!(format!("{:?}", bots[0].token), "Inline(<redacted>)");
    }

    #[test]
    fn no_one_may_exec_unless_named() {
        let bots = |users: &str| {
            let text = format!(r#"{{"telegram":{{"bot_token":"1:a","instance":"a"{users}}}}}"#);
            let p = write("exec", &text);
            load(&p).unwrap().remove(0)
        };
        assert!(!bots("").may_exec(7), "nobody by default");
        let named = bots(r#","exec_users":["7", 8]"#);
        assert!(named.may_exec(7) && named.may_exec(8) && !named.may_exec(9));
        assert!(bots(r#","exec_users":["*"]"#).may_exec(9));
    }

    #[test]
    fn rich_messages_are_auto_unless_set() {
        let mode = |field: &str| {
            let text = format!(r#"{{"telegram":{{"bot_token":"1:a","instance":"a"{field}}}}}"#);
            load(&write("rich", &text)).unwrap().remove(0).rich_mode
        };
        use crate::render::RichMode;
        assert_eq!(mode(""), RichMode::Auto);
        assert_eq!(mode(r#","rich_messages":"always""#), RichMode::Always);
        assert_eq!(mode(r#","rich_messages":"off""#), RichMode::Off);
    }

    #[test]
    fn edits_are_answered_unless_ignored() {
        let answered = |field: &str| {
            let text = format!(r#"{{"telegram":{{"bot_token":"1:a","instance":"a"{field}}}}}"#);
            load(&write("edits", &text)).unwrap().remove(0).answer_edits
        };
        assert!(answered(""));
        assert!(answered(r#","edited_messages":"answer""#));
        assert!(!answered(r#","edited_messages":"ignore""#));
    }

    #[test]
    fn the_inbox_holds_a_gigabyte_unless_said() {
        let max = |field: &str| {
            let text = format!(r#"{{"telegram":{{"bot_token":"1:a","instance":"a"{field}}}}}"#);
            load(&write("inbox", &text)).map(|mut b| b.remove(0).inbox_max)
        };
        assert_eq!(max(""), Ok(1 << 30));
        assert_eq!(max(r#","inbox_max_mb":5"#), Ok(5 << 20));
        for bad in ["0", "-1", "1.5", "\"big\"", "2000000"] {
            let e = max(&format!(r#","inbox_max_mb":{bad}"#)).unwrap_err();
            assert!(
                e.0.ends_with(&format!(
                    "telegram.inbox_max_mb: {bad}: a whole number of megabytes from 1 to 1048576"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn a_rate_limit_is_one_rule_or_a_list_of_them() {
        use crate::rate::Rule;
        let rate = |field: &str| {
            let text = format!(r#"{{"telegram":{{"bot_token":"1:a","instance":"a"{field}}}}}"#);
            load(&write("rate", &text)).unwrap().remove(0).rate
        };
        assert!(!rate("").any(), "no limit unless set");
        let one = rate(r#","rate_limit":{"messages":20,"minutes":60},"rate_limit_exempt":[7,"8"]"#);
        assert_eq!(
            (one.rules, one.exempt),
            (
                vec![Rule {
                    messages: 20,
                    minutes: 60
                }],
                vec![7, 8]
            )
        );
        let two = rate(r#","rate_limit":[{"messages":5,"minutes":1},{"messages":100,"minutes":1440}]"#);
        assert_eq!(two.rules.len(), 2);
        assert_eq!(two.rules[1].minutes, 1440);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            ("{", "invalid JSON"),
            (r#"{}"#, "telegram: missing"),
            (
                r#"{"telegram":{"instance":"a"}}"#,
                "telegram.bot_token_secret: missing",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a"}}"#,
                "telegram.instance: missing",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":5}}"#,
                "telegram.instance: must be a non-empty string",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","allowed_chats":["x"]}}"#,
                "telegram.allowed_chats: \"x\" is not a chat id",
            ),
            (
                r#"{"telegram":[{"bot_token":"1:a","instance":"a"},{"instance":"b"}]}"#,
                "telegram[1].bot_token_secret: missing",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","exec_users":"7"}}"#,
                "telegram.exec_users: must be a list",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","exec_users":["me"]}}"#,
                "telegram.exec_users: \"me\" is not a user id",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","group_mode":"some"}}"#,
                "telegram.group_mode: \"some\": use \"mention\" (default) or \"all\"",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","stream_mode":"fast"}}"#,
                "telegram.stream_mode: \"fast\": use \"auto\" (default), \"draft\" or \"edit\"",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rich_messages":"yes"}}"#,
                "telegram.rich_messages: \"yes\": use \"auto\" (default), \"always\" or \"off\"",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","edited_messages":"reply"}}"#,
                "telegram.edited_messages: \"reply\": use \"answer\" (default) or \"ignore\"",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit":20}}"#,
                "telegram.rate_limit: must be {\"messages\": N, \"minutes\": M}",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit":{"messages":20,"hours":1}}}"#,
                "telegram.rate_limit: \"hours\" is not a field of a rule",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit":{"messages":20}}}"#,
                "telegram.rate_limit: a rule without \"minutes\"",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit":{"messages":0,"minutes":5}}}"#,
                "telegram.rate_limit: messages: 0 is not a whole number from 1 to 10000",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit":{"messages":2,"minutes":50000}}}"#,
                "telegram.rate_limit: minutes: 50000 is not a whole number from 1 to 43200",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit":[1,2,3,4,5,6]}}"#,
                "telegram.rate_limit: 6 rules; 5 at most",
            ),
            (
                r#"{"telegram":{"bot_token":"1:a","instance":"a","rate_limit_exempt":["*"]}}"#,
                "telegram.rate_limit_exempt: \"*\" would exempt everyone",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = write(&format!("bad{i}"), text);
            let e = load(&p).unwrap_err().to_string();
            assert!(
                e.starts_with(&p.display().to_string()) && e.contains(want),
                "{text}: {e}"
            );
        }
    }
}
