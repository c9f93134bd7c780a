//! An MCP server's question for the user (`elicitation/create`) put as a chat message,
//! and the user's answer read back into the server's `ElicitResult`.
//!
//! A form (the default mode) is a flat object of text, number, yes/no and choice fields;
//! the question names the server, says what each field wants, and how to answer: one
//! field takes the whole message, several take a line each (`name: value`, or the values
//! in order). An answer that does not fit is answered with why, and the question again
//! ([`MAX_TRIES`] in all). A page to open (`mode: "url"`) is shown whole, its host apart,
//! and any answer but `/decline` says the user agreed. The chat side (sending the
//! question, waiting for the next message) is the caller's, behind [`User`].

use serde_json::{json, Map, Value};

use crate::text::clip;

/// Questions put for one request at most: a user who answers three times wrong is not
/// asked a fourth, and the server hears `cancel`.
pub const MAX_TRIES: usize = 3;
/// Fields of one form at most, so a question fits one chat message.
pub const MAX_FIELDS: usize = 20;
/// The server's message, and each field's description, are cut to these lengths.
const MAX_MESSAGE: usize = 2000;
const MAX_DESCRIPTION: usize = 300;
/// Choices listed for one field at most.
const MAX_CHOICES: usize = 50;

/// Who answers: the user of the chat a reply is for.
pub trait User {
    /// Put `question` to the user, with `answers` they may pick rather than type (a
    /// chat's buttons); what they said, or why no answer will come.
    fn ask(&self, question: &str, answers: &[String]) -> Heard;

    /// As [`User::ask`], for an answer that must not be kept anywhere (it carries a
    /// sign-in's code): only that something was answered is.
    fn ask_privately(&self, question: &str, answers: &[String]) -> Heard {
        self.ask(question, answers)
    }
}

/// Choices offered as answers to pick at most (a longer list is typed).
const MAX_BUTTONS: usize = 8;
/// A choice longer than this is typed too (a button shows little of it).
const MAX_BUTTON_TEXT: usize = 64;

/// What came of a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// The user's answer, as written.
    Said(String),
    /// The user stopped the reply (`/stop`): the request ends, as any cancelled one.
    Stopped,
    /// No answer came in time: the request ends too, since the reply cannot go on
    /// without a message to answer.
    Silent,
}

/// The request ended with the question unanswered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unanswered {
    /// See [`Heard::Stopped`].
    Stopped,
    /// See [`Heard::Silent`].
    Silent,
}

/// What a server asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// Values to fill in.
    Form { message: String, fields: Vec<Field> },
    /// A page for the user to open; the server hears whether they agreed.
    Url {
        message: String,
        url: String,
        host: String,
    },
}

/// One field of a form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Its key in the answer's `content`.
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub kind: Kind,
    pub required: bool,
    /// Taken when the user leaves the field out (the form shows it filled in).
    pub default: Option<Value>,
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text {
        min: Option<usize>,
        max: Option<usize>,
        format: Option<String>,
    },
    Number {
        integer: bool,
        min: Option<f64>,
        max: Option<f64>,
    },
    YesNo,
    /// One of the choices: (value sent, title shown).
    Choice(Vec<(String, String)>),
    /// Several of them.
    Choices {
        options: Vec<(String, String)>,
        min: Option<usize>,
        max: Option<usize>,
    },
}

/// Read an `elicitation/create` request's `params`; why it cannot be asked otherwise.
pub fn parse(params: &Value) -> Result<Ask, String> {
    let message = clip(params["message"].as_str().unwrap_or(""), MAX_MESSAGE);
    match params["mode"].as_str().unwrap_or("form") {
        "form" => {}
        "url" => {
            let url = params["url"].as_str().ok_or("a page to open without `url`")?;
            let host = host_of(url).ok_or_else(|| format!("{:?} is not an http(s) URL", clip(url, 100)))?;
            return Ok(Ask::Url {
                message,
                url: url.to_string(),
                host,
            });
        }
        other => return Err(format!("unknown mode {:?}", clip(other, 40))),
    }
    let schema = &params["requestedSchema"];
    let props = schema["properties"].as_object().cloned().unwrap_or_default();
    if props.len() > MAX_FIELDS {
        return Err(format!(
            "a form of {} fields (the agent asks {MAX_FIELDS} at most)",
            props.len()
        ));
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let fields = props
        .iter()
        .map(|(name, p)| {
            Ok(Field {
                name: name.clone(),
                title: p["title"].as_str().map(|t| clip(t, 100)),
                description: p["description"].as_str().map(|d| clip(d, MAX_DESCRIPTION)),
                kind: kind_of(p).map_err(|why| format!("field {name:?}: {why}"))?,
                required: required.contains(&name.as_str()),
                default: p.get("default").filter(|d| !d.is_null()).cloned(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Ask::Form { message, fields })
}

fn kind_of(p: &Value) -> Result<Kind, String> {
    let count = |k: &str| p[k].as_u64().map(|n| n as usize);
    Ok(match p["type"].as_str().unwrap_or("") {
        "string" if p.get("enum").is_some() || p.get("oneOf").is_some() => Kind::Choice(options(p)?),
        "string" => Kind::Text {
            min: count("minLength"),
            max: count("maxLength"),
            format: p["format"].as_str().map(str::to_string),
        },
        t @ ("number" | "integer") => Kind::Number {
            integer: t == "integer",
            min: p["minimum"].as_f64(),
            max: p["maximum"].as_f64(),
        },
        "boolean" => Kind::YesNo,
        "array" => Kind::Choices {
            options: options(&p["items"])?,
            min: count("minItems"),
            max: count("maxItems"),
        },
        other => return Err(format!("type {:?} is not one a form holds", clip(other, 40))),
    })
}

/// The choices of an enum (`enum`, with `enumNames` of older servers as titles; `oneOf`
/// or `anyOf` of `const` and `title`).
fn options(p: &Value) -> Result<Vec<(String, String)>, String> {
    let listed: Vec<(String, String)> = if let Some(values) = p["enum"].as_array() {
        let names = p["enumNames"].as_array();
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let v = v.as_str()?;
                let title = names.and_then(|n| n.get(i)).and_then(Value::as_str).unwrap_or(v);
                Some((v.to_string(), clip(title, 100)))
            })
            .collect()
    } else {
        p.get("oneOf")
            .or_else(|| p.get("anyOf"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let v = o["const"].as_str()?;
                Some((v.to_string(), clip(o["title"].as_str().unwrap_or(v), 100)))
            })
            .collect()
    };
    match listed.len() {
        0 => Err("no choices".into()),
        n if n > MAX_CHOICES => Err(format!("{n} choices (the agent lists {MAX_CHOICES} at most)")),
        _ => Ok(listed),
    }
}

/// The host of an `http(s)` URL, lower case; `None` for anything else.
pub fn host_of(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// `url` as a Markdown link showing itself, so a chat that reads Markdown shows and
/// opens it whole (an `_` or `__` in a query is otherwise taken for emphasis, which cuts
/// the address); as it is when it cannot be one.
pub fn link(url: &str) -> String {
    match url.contains(|c: char| c.is_whitespace() || "[]()".contains(c)) {
        true => url.to_string(),
        false => format!("[{url}]({url})"),
    }
}

/// Which host a page to open is on, with a warning for a name in another alphabet.
pub fn where_it_is(host: &str) -> String {
    let mut said = format!("It is on {host}");
    if host.split('.').any(|label| label.starts_with("xn--")) {
        said.push_str(" (⚠️ a name written with other alphabets: it may imitate a name you know)");
    }
    said
}

/// The chat message asking `ask` of the user, on behalf of `server`.
pub fn question(server: &str, ask: &Ask) -> String {
    match ask {
        Ask::Url { message, url, host } => {
            let mut q = format!("🔗 The MCP server “{server}” asks you to open a page");
            if !message.is_empty() {
                q.push_str(&format!(": {message}"));
            }
            q.push_str(&format!("\n\n{}\n\n{}", link(url), where_it_is(host)));
            q.push_str(
                ".\n\nOpen it only if you trust it, then send any message to go on; /decline to refuse.",
            );
            q
        }
        Ask::Form { message, fields } => {
            let mut q = format!("❓ The MCP server “{server}” asks");
            q.push_str(&match message.is_empty() {
                true => ":".to_string(),
                false => format!(": {message}"),
            });
            let how = match fields.as_slice() {
                [] => "Send any message to go on.".to_string(),
                [f] => {
                    q.push_str(&format!("\n\n{}", describe(f)));
                    if let Kind::Choice(o) = &f.kind {
                        q.push_str(&numbered(o));
                    }
                    match &f.kind {
                        Kind::YesNo => "Answer yes or no.".to_string(),
                        Kind::Choice(_) => "Answer with a number or a name.".to_string(),
                        Kind::Choices { .. } => {
                            "Answer with numbers or names, separated by commas.".to_string()
                        }
                        _ if !f.required => "Answer, or send - to leave it out.".to_string(),
                        _ => "Answer with the value.".to_string(),
                    }
                }
                many => {
                    q.push('\n');
                    for f in many {
                        q.push_str(&format!("\n• {}", describe(f)));
                    }
                    "Answer one per line as `name: value` (or the values in this order, one per line); leave out what you do not want to give.".to_string()
                }
            };
            format!("{q}\n\n{how} /decline to refuse.")
        }
    }
}

/// One field as the question lists it: its name, what it is for, what it takes.
fn describe(f: &Field) -> String {
    let mut line = format!("`{}`", f.name);
    let said: Vec<&str> = [f.title.as_deref(), f.description.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty() && *s != f.name)
        .collect();
    if !said.is_empty() {
        line.push_str(&format!(": {}", said.join(", ")));
    }
    let mut notes = vec![match &f.kind {
        Kind::Text { format, .. } => match format.as_deref() {
            Some("email") => "an email address".to_string(),
            Some("uri") => "a URI".to_string(),
            Some("date") => "a date, YYYY-MM-DD".to_string(),
            Some("date-time") => "a date and time, YYYY-MM-DDTHH:MM:SSZ".to_string(),
            _ => "text".to_string(),
        },
        Kind::Number { integer: true, .. } => "a whole number".to_string(),
        Kind::Number { .. } => "a number".to_string(),
        Kind::YesNo => "yes or no".to_string(),
        Kind::Choice(o) => match o.len() {
            n if n > 1 => format!("one of {}", titles(o)),
            _ => format!("only {}", titles(o)),
        },
        Kind::Choices { options, .. } => format!("any of {}", titles(options)),
    }];
    match &f.kind {
        Kind::Text { min, max, .. } => notes.extend(bounds(*min, *max, "characters")),
        Kind::Number { min, max, .. } => {
            notes.extend(min.map(|m| format!("at least {m}")));
            notes.extend(max.map(|m| format!("at most {m}")));
        }
        Kind::Choices { min, max, .. } => notes.extend(bounds(*min, *max, "choices")),
        _ => {}
    }
    if f.required {
        notes.push("required".into());
    }
    if let Some(d) = &f.default {
        notes.push(format!("if left out: {}", shown(d, &f.kind)));
    }
    format!("{line} ({})", notes.join(", "))
}

fn bounds(min: Option<usize>, max: Option<usize>, what: &str) -> Option<String> {
    match (min, max) {
        (Some(a), Some(b)) => Some(format!("{a} to {b} {what}")),
        (Some(a), None) => Some(format!("at least {a} {what}")),
        (None, Some(b)) => Some(format!("at most {b} {what}")),
        (None, None) => None,
    }
}

fn titles(options: &[(String, String)]) -> String {
    let list: Vec<&str> = options.iter().map(|(_, t)| t.as_str()).collect();
    list.join(", ")
}

/// The choices numbered, for a field asked alone.
fn numbered(options: &[(String, String)]) -> String {
    options
        .iter()
        .enumerate()
        .map(|(i, (_, t))| format!("\n{}. {t}", i + 1))
        .collect()
}

/// A value as the user would write it (a choice by its title).
fn shown(v: &Value, kind: &Kind) -> String {
    let title = |s: &str| match kind {
        Kind::Choice(o) | Kind::Choices { options: o, .. } => o
            .iter()
            .find(|(v, _)| v == s)
            .map_or(s.to_string(), |(_, t)| t.clone()),
        _ => s.to_string(),
    };
    match v {
        Value::String(s) => title(s),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), title))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// What an answer comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The `ElicitResult` for the server.
    Result(Value),
    /// It does not fit the form: why, for the user.
    Again(String),
}

/// The answers `ask` can be given by a pick rather than typed (each reads back as that
/// answer): yes or no, the choices of a field asked alone, going on after a page; and
/// always `/decline`.
pub fn answers(ask: &Ask) -> Vec<String> {
    let mut picks: Vec<String> = match ask {
        Ask::Url { .. } => vec!["Done".into()],
        Ask::Form { fields, .. } => match fields.as_slice() {
            [] => vec!["OK".into()],
            [f] => match &f.kind {
                Kind::YesNo => vec!["Yes".into(), "No".into()],
                Kind::Choice(o)
                    if o.len() <= MAX_BUTTONS
                        && o.iter()
                            .all(|(_, t)| t.chars().count() <= MAX_BUTTON_TEXT && !t.trim().is_empty()) =>
                {
                    o.iter().map(|(_, t)| t.trim().to_string()).collect()
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
    };
    picks.push("/decline".into());
    picks
}

/// The result of `/decline`.
pub fn declined() -> Value {
    json!({"action": "decline"})
}

/// The result of a question nobody could answer (no user in a scheduled task's run, a
/// request the agent could not put).
pub fn cancelled() -> Value {
    json!({"action": "cancel"})
}

/// Read the user's `text` as the answer to `ask`.
pub fn read(ask: &Ask, text: &str) -> Reading {
    let text = text.trim();
    if crate::text::slash_command(text).is_some_and(|(c, rest)| c == "decline" && rest.is_empty()) {
        return Reading::Result(declined());
    }
    let fields = match ask {
        Ask::Url { .. } => return Reading::Result(json!({"action": "accept"})),
        Ask::Form { fields, .. } => fields,
    };
    let given = match fields.as_slice() {
        [] => Vec::new(),
        [one] => vec![(one, text)],
        many => match lines(many, text) {
            Ok(g) => g,
            Err(why) => return Reading::Again(why),
        },
    };
    let mut content = Map::new();
    for f in fields {
        let raw = given
            .iter()
            .find(|(g, _)| g.name == f.name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty() && *v != "-");
        match raw {
            Some(raw) => match value(f, raw) {
                Ok(v) => {
                    content.insert(f.name.clone(), v);
                }
                Err(why) => return Reading::Again(format!("`{}`: {why}", f.name)),
            },
            None => match &f.default {
                Some(d) => {
                    content.insert(f.name.clone(), d.clone());
                }
                None if f.required => return Reading::Again(format!("`{}` is required.", f.name)),
                None => {}
            },
        }
    }
    Reading::Result(json!({"action": "accept", "content": content}))
}

/// Each field's text in a several-field answer: `name: value` lines (by name or title),
/// or else the lines in the fields' order.
fn lines<'f, 't>(fields: &'f [Field], text: &'t str) -> Result<Vec<(&'f Field, &'t str)>, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let named: Vec<Option<(&Field, &str)>> = lines
        .iter()
        .map(|l| {
            let (key, v) = l.split_once([':', '='])?;
            let key = key.trim().trim_matches('`');
            let f = fields.iter().find(|f| {
                f.name.eq_ignore_ascii_case(key)
                    || f.title.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(key))
            })?;
            Some((f, v))
        })
        .collect();
    if named.iter().any(Option::is_some) {
        if let Some(i) = named.iter().position(Option::is_none) {
            return Err(format!(
                "“{}” names none of the fields: write each line as `name: value`.",
                clip(lines[i], 60)
            ));
        }
        return Ok(named.into_iter().flatten().collect());
    }
    if lines.len() > fields.len() {
        return Err(format!(
            "{} lines for {} fields: write each line as `name: value`.",
            lines.len(),
            fields.len()
        ));
    }
    Ok(fields.iter().zip(lines).collect())
}

/// `raw` as the value `f` holds; why not.
fn value(f: &Field, raw: &str) -> Result<Value, String> {
    match &f.kind {
        Kind::Text { min, max, format } => {
            let n = raw.chars().count();
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                let b = bounds(*min, *max, "characters").unwrap_or_default();
                return Err(format!("{n} characters; it takes {b}."));
            }
            if let Some(why) = format.as_deref().and_then(|fmt| misformatted(fmt, raw)) {
                return Err(why);
            }
            Ok(Value::String(raw.to_string()))
        }
        Kind::Number { integer, min, max } => {
            let n: f64 = raw
                .replace(['_', ' '], "")
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| format!("“{}” is not a number.", clip(raw, 40)))?;
            if *integer && n.fract() != 0.0 {
                return Err(format!("{n} is not a whole number."));
            }
            if min.is_some_and(|m| n < m) {
                return Err(format!("{n} is less than {}.", min.unwrap_or_default()));
            }
            if max.is_some_and(|m| n > m) {
                return Err(format!("{n} is more than {}.", max.unwrap_or_default()));
            }
            Ok(match *integer && n.abs() < 9.0e15 {
                true => json!(n as i64),
                false => json!(n),
            })
        }
        Kind::YesNo => yes_no(raw)
            .map(Value::Bool)
            .ok_or_else(|| format!("“{}”: answer yes or no.", clip(raw, 40))),
        Kind::Choice(options) => choice(options, raw).map(Value::String),
        Kind::Choices { options, min, max } => {
            let mut picked: Vec<String> = Vec::new();
            for part in raw.split([',', '\n']).map(str::trim).filter(|p| !p.is_empty()) {
                let v = choice(options, part)?;
                if !picked.contains(&v) {
                    picked.push(v);
                }
            }
            let n = picked.len();
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                let b = bounds(*min, *max, "choices").unwrap_or_default();
                return Err(format!("{n} chosen; it takes {b}."));
            }
            Ok(json!(picked))
        }
    }
}

/// The choice `raw` names: by its number in the list, its value or its title.
fn choice(options: &[(String, String)], raw: &str) -> Result<String, String> {
    let raw = raw.trim().trim_end_matches('.');
    let by_number = raw
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| options.get(i));
    by_number
        .or_else(|| options.iter().find(|(v, _)| v == raw))
        .or_else(|| {
            options
                .iter()
                .find(|(v, t)| v.eq_ignore_ascii_case(raw) || t.to_lowercase() == raw.to_lowercase())
        })
        .map(|(v, _)| v.clone())
        .ok_or_else(|| format!("“{}” is not one of {}.", clip(raw, 40), titles(options)))
}

fn yes_no(raw: &str) -> Option<bool> {
    let word = raw.trim().trim_end_matches(['.', '!']).to_lowercase();
    match word.as_str() {
        "yes" | "y" | "true" | "1" | "on" | "ok" | "sure" | "✅" | "👍" => Some(true),
        "no" | "n" | "false" | "0" | "off" | "❌" | "👎" => Some(false),
        _ => None,
    }
}

/// Why `raw` is not of `format` (those the specification names); `None` when it is, or
/// for a format the agent does not check.
fn misformatted(format: &str, raw: &str) -> Option<String> {
    let ok = match format {
        "email" => {
            raw.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }) && !raw.contains(char::is_whitespace)
        }
        "uri" => {
            raw.split_once(':').is_some_and(|(scheme, rest)| {
                scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                    && !rest.is_empty()
            }) && !raw.contains(char::is_whitespace)
        }
        "date" => is_date(raw),
        "date-time" => raw
            .split_once(['T', 't', ' '])
            .is_some_and(|(d, t)| is_date(d) && is_time(t)),
        _ => return None,
    };
    (!ok).then(|| {
        let wanted = match format {
            "email" => "an email address",
            "uri" => "a URI (scheme:…)",
            "date" => "a date, YYYY-MM-DD",
            _ => "a date and time, YYYY-MM-DDTHH:MM:SSZ",
        };
        format!("“{}” is not {wanted}.", clip(raw, 60))
    })
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else { return false };
    let num = |p: &str, len: usize| {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    match (num(y, 4), num(m, 2), num(d, 2)) {
        (Some(y), Some(m @ 1..=12), Some(d)) => {
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let days = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            (1..=days[m as usize - 1]).contains(&d)
        }
        _ => false,
    }
}

/// `HH:MM:SS`, with optional fraction, and a zone (`Z` or `±HH:MM`).
fn is_time(s: &str) -> bool {
    let (clock, zone) = match s.find(['Z', 'z', '+', '-']) {
        Some(i) => s.split_at(i),
        None => return false,
    };
    let zone_ok = matches!(zone, "Z" | "z")
        || (zone.len() == 6
            && zone.as_bytes()[3] == b':'
            && two_digits(&zone[1..3], 23)
            && two_digits(&zone[4..], 59));
    let clock = clock.split('.').next().unwrap_or("");
    let parts: Vec<&str> = clock.split(':').collect();
    zone_ok
        && matches!(parts.as_slice(), [h, m, sec] if two_digits(h, 23) && two_digits(m, 59) && two_digits(sec, 60))
}

fn two_digits(s: &str, max: u32) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok_and(|n| n <= max)
}

/// Put `params` (an `elicitation/create` request's) to `user` on behalf of `server`,
/// asking again while the answer does not fit: the server's `ElicitResult`. A request
/// the agent cannot put (an unknown mode, a field of another type) is answered
/// `cancel` without asking, and logged.
pub fn put(server: &str, params: &Value, user: &dyn User) -> Result<Value, Unanswered> {
    let ask = match parse(params) {
        Ok(a) => a,
        Err(why) => {
            log::warn!("MCP [{server}]: cannot ask the user: {why}");
            return Ok(cancelled());
        }
    };
    let asked = question(server, &ask);
    let picks = answers(&ask);
    let mut q = asked.clone();
    for _ in 0..MAX_TRIES {
        match user.ask(&q, &picks) {
            Heard::Said(text) => match read(&ask, &text) {
                Reading::Result(r) => {
                    log::info!(
                        "MCP [{server}]: the user answered ({})",
                        r["action"].as_str().unwrap_or("?")
                    );
                    return Ok(r);
                }
                Reading::Again(why) => q = format!("⚠️ {why}\n\n{asked}"),
            },
            Heard::Stopped => return Err(Unanswered::Stopped),
            Heard::Silent => return Err(Unanswered::Silent),
        }
    }
    log::info!("MCP [{server}]: no answer that fits after {MAX_TRIES} tries");
    Ok(cancelled())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn form(schema: Value) -> Ask {
        parse(&json!({"message": "Tell me", "requestedSchema": schema})).unwrap()
    }

    fn contact() -> Ask {
        form(json!({"type": "object", "properties": {
            "name": {"type": "string", "description": "Your full name"},
            "email": {"type": "string", "format": "email"},
            "age": {"type": "integer", "minimum": 18},
            "color": {"type": "string", "oneOf": [{"const": "#f00", "title": "Red"}, {"const": "#0f0", "title": "Green"}], "default": "#0f0"},
        }, "required": ["name", "email"]}))
    }

    fn accepted(r: Reading) -> Value {
        match r {
            Reading::Result(v) if v["action"] == "accept" => v["content"].clone(),
            other => panic!("not accepted: {other:?}"),
        }
    }

    fn again(r: Reading) -> String {
        match r {
            Reading::Again(why) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn one_field_takes_the_whole_message() {
        let ask = form(json!({"properties": {"name": {"type": "string"}}, "required": ["name"]}));
        assert_eq!(accepted(read(&ask, "  octocat \n")), json!({"name": "octocat"}));
        assert_eq!(again(read(&ask, " ")), "`name` is required.");
        assert_eq!(read(&ask, "/decline"), Reading::Result(declined()));
        assert_eq!(read(&ask, "/decline@aegis_bot"), Reading::Result(declined()));
        let q = question("github", &ask);
        assert!(
            q.starts_with("❓ The MCP server “github” asks: Tell me\n\n`name` (text, required)"),
            "{q}"
        );
        assert!(q.ends_with("Answer with the value. /decline to refuse."), "{q}");
    }

    #[test]
    fn several_fields_by_name_or_in_order_with_defaults_and_checks() {
        let ask = contact();
        let content = accepted(read(&ask, "email: a@b.org\nName = Ada Lovelace\n`age`: 36"));
        assert_eq!(
            content,
            json!({"name": "Ada Lovelace", "email": "a@b.org", "age": 36, "color": "#0f0"})
        );
        // In the listed order (the schema's keys, as JSON objects keep them sorted here).
        let ask_order: Vec<String> = match &ask {
            Ask::Form { fields, .. } => fields.iter().map(|f| f.name.clone()).collect(),
            _ => unreachable!(),
        };
        assert_eq!(ask_order, ["age", "color", "email", "name"]);
        assert_eq!(
            accepted(read(&ask, "40\nred\nx@y.io\nAl")),
            json!({"age": 40, "color": "#f00", "email": "x@y.io", "name": "Al"})
        );
        assert_eq!(again(read(&ask, "name: Al")), "`email` is required.");
        assert_eq!(
            again(read(&ask, "name: Al\nemail: nope")),
            "`email`: “nope” is not an email address."
        );
        assert_eq!(
            again(read(&ask, "name: Al\nemail: a@b.c\nage: 12")),
            "`age`: 12 is less than 18."
        );
        assert_eq!(
            again(read(&ask, "name: Al\nemail: a@b.c\nage: 20.5")),
            "`age`: 20.5 is not a whole number."
        );
        assert!(again(read(&ask, "name: Al\nhello")).contains("names none of the fields"));
        assert!(again(read(&ask, "1\n2\n3\n4\n5")).contains("5 lines for 4 fields"));
        let q = question("contacts", &ask);
        assert!(
            q.contains("\n• `color` (one of Red, Green, if left out: Green)"),
            "{q}"
        );
        assert!(q.contains("\n• `email` (an email address, required)"), "{q}");
        assert!(q.contains("\n• `name`: Your full name (text, required)"), "{q}");
        assert!(q.contains("\n• `age` (a whole number, at least 18)"), "{q}");
    }

    #[test]
    fn yes_no_and_choices() {
        let ask = form(json!({"properties": {"ok": {"type": "boolean", "title": "Delete 5 files?"}}}));
        assert_eq!(accepted(read(&ask, "Yes!")), json!({"ok": true}));
        assert_eq!(accepted(read(&ask, "no")), json!({"ok": false}));
        assert_eq!(again(read(&ask, "maybe")), "`ok`: “maybe”: answer yes or no.");
        assert!(question("fs", &ask).contains("Answer yes or no."));

        let env = form(
            json!({"properties": {"env": {"type": "string", "enum": ["staging", "production"]}}, "required": ["env"]}),
        );
        assert_eq!(accepted(read(&env, "2")), json!({"env": "production"}));
        assert_eq!(accepted(read(&env, "Staging")), json!({"env": "staging"}));
        assert_eq!(
            again(read(&env, "3")),
            "`env`: “3” is not one of staging, production."
        );
        assert!(question("deploy", &env)
            .contains("\n1. staging\n2. production\n\nAnswer with a number or a name."));

        let many = form(
            json!({"properties": {"c": {"type": "array", "minItems": 1, "maxItems": 2,
            "items": {"anyOf": [{"const": "r", "title": "Red"}, {"const": "g", "title": "Green"}, {"const": "b", "title": "Blue"}]}}}}),
        );
        assert_eq!(accepted(read(&many, "red, 3, Red")), json!({"c": ["r", "b"]}));
        assert_eq!(
            again(read(&many, "1,2,3")),
            "`c`: 3 chosen; it takes 1 to 2 choices."
        );
        assert!(again(read(&many, "pink")).contains("is not one of Red, Green, Blue"));
    }

    #[test]
    fn text_bounds_formats_and_optional_fields() {
        let ask = form(json!({"properties": {
            "code": {"type": "string", "minLength": 3, "maxLength": 5},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "home": {"type": "string", "format": "uri"},
        }}));
        assert_eq!(accepted(read(&ask, "code: abc\nday: -")), json!({"code": "abc"}));
        assert_eq!(
            again(read(&ask, "code: ab")),
            "`code`: 2 characters; it takes 3 to 5 characters."
        );
        assert_eq!(
            accepted(read(&ask, "day: 2024-02-29")),
            json!({"day": "2024-02-29"})
        );
        assert!(again(read(&ask, "day: 2023-02-29")).contains("is not a date"));
        assert_eq!(
            accepted(read(&ask, "at: 2026-12-07T10:00:00+01:00\nhome: https://x.org")),
            json!({"at": "2026-12-07T10:00:00+01:00", "home": "https://x.org"})
        );
        assert!(again(read(&ask, "at: 2026-12-07 25:00:00Z")).contains("not a date and time"));
        assert!(again(read(&ask, "home: not a uri")).contains("not a URI"));
        let one = form(json!({"properties": {"note": {"type": "string"}}}));
        assert_eq!(accepted(read(&one, "-")), json!({}));
        assert!(question("n", &one).contains("Answer, or send - to leave it out."));
    }

    #[test]
    fn a_page_to_open_shows_the_url_and_its_host() {
        let ask = parse(&json!({"mode": "url", "url": "https://user@xn--pple-43d.com:8443/connect?x=1", "message": "Connect your account."})).unwrap();
        let q = question("pay", &ask);
        let url = "https://user@xn--pple-43d.com:8443/connect?x=1";
        assert!(q.starts_with(&format!("🔗 The MCP server “pay” asks you to open a page: Connect your account.\n\n[{url}]({url})\n\nIt is on xn--pple-43d.com (⚠️")), "{q}");
        assert_eq!(
            link("https://a/b?c=(d)"),
            "https://a/b?c=(d)",
            "not a link that would end early"
        );
        assert_eq!(read(&ask, "done"), Reading::Result(json!({"action": "accept"})));
        assert_eq!(read(&ask, "/decline"), Reading::Result(declined()));
        assert!(parse(&json!({"mode": "url", "url": "javascript:alert(1)"})).is_err());
        assert!(parse(&json!({"mode": "url"})).is_err());
        assert_eq!(host_of("http://[::1]:80/x"), Some("::1".into()));
    }

    #[test]
    fn picks_are_offered_where_a_tap_can_answer_and_read_back_as_that_answer() {
        let yes_no = form(json!({"properties": {"ok": {"type": "boolean"}}}));
        let env = form(json!({"properties": {"env": {"type": "string", "oneOf": [
            {"const": "stg", "title": "Staging"}, {"const": "prd", "title": " Production "}]}}}));
        let page = parse(&json!({"mode": "url", "url": "https://x.org/c"})).unwrap();
        let text = form(json!({"properties": {"name": {"type": "string"}}}));
        let many: Vec<String> = (0..9).map(|i| format!("o{i}")).collect();
        let long = form(json!({"properties": {"c": {"type": "string", "enum": many}}}));
        assert_eq!(answers(&yes_no), ["Yes", "No", "/decline"]);
        assert_eq!(answers(&env), ["Staging", "Production", "/decline"]);
        assert_eq!(answers(&page), ["Done", "/decline"]);
        assert_eq!(answers(&text), ["/decline"], "typed");
        assert_eq!(answers(&long), ["/decline"], "nine choices are typed");
        // Whatever is picked reads as what it says.
        for (ask, pick, content) in [
            (&yes_no, "Yes", json!({"ok": true})),
            (&yes_no, "No", json!({"ok": false})),
            (&env, "Production", json!({"env": "prd"})),
        ] {
            assert_eq!(accepted(read(ask, pick)), content);
        }
        assert_eq!(read(&page, "Done"), Reading::Result(json!({"action": "accept"})));
        for ask in [&yes_no, &env, &page, &text] {
            assert_eq!(read(ask, "/decline"), Reading::Result(declined()));
        }
    }

    #[test]
    fn forms_the_agent_cannot_put_are_refused_with_why() {
        assert!(parse(&json!({"mode": "telepathy"}))
            .unwrap_err()
            .contains("unknown mode"));
        let nested = json!({"requestedSchema": {"properties": {"a": {"type": "object"}}}});
        assert_eq!(
            parse(&nested).unwrap_err(),
            "field \"a\": type \"object\" is not one a form holds"
        );
        let props: Map<String, Value> = (0..21)
            .map(|i| (format!("f{i}"), json!({"type": "string"})))
            .collect();
        let big = json!({"requestedSchema": {"properties": props}});
        assert!(parse(&big).unwrap_err().contains("21 fields"));
        let empty = json!({"requestedSchema": {"properties": {"e": {"type": "string", "enum": []}}}});
        assert!(parse(&empty).unwrap_err().contains("no choices"));
    }

    struct Script(std::cell::RefCell<Vec<Heard>>, std::cell::RefCell<Vec<String>>);
    impl User for Script {
        fn ask(&self, question: &str, _: &[String]) -> Heard {
            self.1.borrow_mut().push(question.to_string());
            self.0.borrow_mut().remove(0)
        }
    }

    #[test]
    fn a_wrong_answer_is_asked_again_at_most_three_times() {
        let params = json!({"message": "Age?", "requestedSchema": {"properties": {"age": {"type": "integer"}}, "required": ["age"]}});
        let said = |s: &str| Heard::Said(s.into());
        let user = Script(vec![said("old"), said("42")].into(), Vec::new().into());
        assert_eq!(
            put("s", &params, &user),
            Ok(json!({"action": "accept", "content": {"age": 42}}))
        );
        let asked = user.1.borrow();
        assert!(
            asked[1].starts_with("⚠️ `age`: “old” is not a number.\n\n❓ The MCP server “s” asks: Age?"),
            "{}",
            asked[1]
        );

        let user = Script(
            vec![said("a"), said("b"), said("c"), said("4")].into(),
            Vec::new().into(),
        );
        assert_eq!(put("s", &params, &user), Ok(cancelled()));
        assert_eq!(user.0.borrow().len(), 1, "not asked a fourth time");

        let user = Script(vec![Heard::Stopped].into(), Vec::new().into());
        assert_eq!(put("s", &params, &user), Err(Unanswered::Stopped));
        let user = Script(vec![Heard::Silent].into(), Vec::new().into());
        assert_eq!(put("s", &params, &user), Err(Unanswered::Silent));
        let user = Script(Vec::new().into(), Vec::new().into());
        assert_eq!(
            put("s", &json!({"mode": "nope"}), &user),
            Ok(cancelled()),
            "not asked"
        );
    }

    proptest! {
        /// Whatever a server sends and a user answers: no panic, and an accepted answer
        /// holds only the form's fields, each of the type its field declares.
        #[test]
        fn any_form_and_any_answer_give_a_result_of_the_forms_shape(
            schema in prop::collection::btree_map("[a-c]{1,2}", prop_oneof![
                Just(json!({"type": "string", "maxLength": 4})),
                Just(json!({"type": "integer", "minimum": 0})),
                Just(json!({"type": "boolean"})),
                Just(json!({"type": "string", "enum": ["x", "y"]})),
                Just(json!({"type": "array", "items": {"enum": ["x", "y"]}})),
            ], 0..4),
            answer in "(\\PC{0,12}(\n|: |=)){0,4}\\PC{0,12}",
        ) {
            let required: Vec<&String> = schema.keys().take(1).collect();
            let ask = form(json!({"properties": schema, "required": required}));
            let _ = question("s", &ask);
            if let Reading::Result(r) = read(&ask, &answer) {
                if r["action"] == "accept" {
                    for (k, v) in r["content"].as_object().unwrap() {
                        let declared = schema[k]["type"].as_str().unwrap();
                        let ok = match declared {
                            "string" => v.is_string(),
                            "integer" => v.is_i64() || v.is_f64(),
                            "boolean" => v.is_boolean(),
                            _ => v.is_array(),
                        };
                        prop_assert!(ok, "{k}: {v} for {declared}");
                    }
                }
            }
        }
    }
}
