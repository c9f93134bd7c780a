//! [ours] `/model`: the model each chat talks to. A chat that chose none talks to the
//! agent's (`AEGIS_MODEL`, agent.json `model`, else the provider's default); `/model NAME`
//! picks another of the models the provider lists for the key, for that chat alone, and
//! it stays chosen across `/new` and restarts (`.aegis/chat-models.json`). Where the
//! environment holds another provider's key too, `/model anthropic/NAME` or `/model
//! openai/NAME` picks one of that provider's models, with the agent's settings
//! (`config::others`); a choice is kept as it was named.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crossbeam_channel::Receiver;
use tether::frame::Session;

use crate::llm::{Llm, ProviderKind};

/// Where the chats' choices are kept, under the workspace.
const FILE: &str = ".aegis/chat-models.json";
/// Most models named in `/model`'s answer.
const MAX_SHOWN: usize = 30;
/// Most close names suggested for a name the server does not list.
const MAX_CLOSE: usize = 5;
/// Longest model name taken.
const MAX_NAME: usize = 200;

/// The agent's model and the ones chats chose.
#[derive(Debug)]
pub struct Models {
    /// The agent's own client: its model for every chat that chose none.
    default: Llm,
    /// `.aegis/chat-models.json`.
    file: PathBuf,
    /// The models a chat may pick, when the operator said (`AEGIS_MODELS`, agent.json
    /// `models`); else any the server lists.
    allowed: Option<Vec<String>>,
    /// Each chat's choice, by `channel/id`.
    chosen: Mutex<BTreeMap<String, String>>,
    /// A client per model chosen, kept so what the server refused for a model is learnt
    /// once per run.
    clients: Mutex<HashMap<String, Llm>>,
    /// The other providers a chat may pick from (`anthropic/NAME`, `openai/NAME`).
    others: Vec<Llm>,
}

/// Where a model a chat names is.
#[derive(Debug, PartialEq)]
enum Target<'n> {
    /// At the agent's provider: this name there.
    Agents(&'n str),
    /// At `others[i]`: this name there.
    Other(usize, &'n str),
    /// At a provider whose key the environment does not hold.
    Missing(ProviderKind),
}

impl Models {
    /// The agent's model `default`, the choices kept in `workspace`, and the models a
    /// chat may pick (`allowed`; `None`: any the server lists).
    pub fn new(default: Llm, workspace: &Path, allowed: Option<Vec<String>>, others: Vec<Llm>) -> Models {
        let file = workspace.join(FILE);
        let chosen = load(&file);
        if !chosen.is_empty() {
            log::info!("{} chat(s) talk to a model of their own (/model)", chosen.len());
        }
        Models {
            default,
            file,
            allowed,
            chosen: Mutex::new(chosen),
            clients: Mutex::default(),
            others,
        }
    }

    /// Where `name` is: `anthropic/` or `openai/` names another provider, except at
    /// OpenRouter, whose own names begin so; the agent's own prefix stays part of the
    /// name (a server speaking OpenAI's API may name a model `openai/gpt-oss-20b`), as
    /// does one the host's model server is asked for when that provider's key is not set.
    fn target<'n>(&self, name: &'n str) -> Target<'n> {
        let agents = self.default.kind();
        let named = name.split_once('/').and_then(|(p, rest)| {
            let kind = [ProviderKind::Anthropic, ProviderKind::OpenAi]
                .into_iter()
                .find(|k| k.prefix() == p)?;
            Some((kind, rest))
        });
        let Some((kind, rest)) = named.filter(|(k, _)| !self.default.on_openrouter() && agents != Some(*k))
        else {
            return Target::Agents(name);
        };
        match self.others.iter().position(|o| o.kind() == Some(kind)) {
            Some(i) => Target::Other(i, rest),
            None if agents.is_some() => Target::Missing(kind),
            None => Target::Agents(name),
        }
    }

    /// The client of `target` (the agent's own for one whose key is gone since).
    fn client_of(&self, target: &Target) -> &Llm {
        match target {
            Target::Other(i, _) => &self.others[*i],
            _ => &self.default,
        }
    }

    /// The client for `chat`'s replies: its choice, while the operator still allows it.
    pub fn for_chat(&self, chat: &Session) -> Llm {
        let chosen = self.choice(chat);
        let Some(model) = chosen else {
            return self.default.clone();
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(model.clone())
            .or_insert_with(|| {
                let target = self.target(&model);
                match target {
                    Target::Agents(name) | Target::Other(_, name) => self.client_of(&target).for_model(name),
                    Target::Missing(kind) => {
                        log::warn!(
                            "{}/{}: its model {model} needs {kind}'s key, which is not set any more: \
                             the agent's model answers",
                            chat.channel,
                            chat.id
                        );
                        self.default.clone()
                    }
                }
            })
            .clone()
    }

    /// The answer to `/model` followed by `rest`: the chat's model and the ones it may
    /// pick; `NAME` to pick one; `default` for the agent's again. `None` when `cancel`
    /// (the user's `/stop`) ended the wait for the server's list.
    pub fn command(&self, chat: &Session, rest: &str, cancel: &Receiver<()>) -> Option<String> {
        let mut words = rest.split_whitespace();
        let said = match (words.next(), words.next()) {
            (None, _) => self.status(chat, cancel)?,
            (Some("default"), None) => {
                self.set(chat, None);
                format!(
                    "This chat talks to the agent's model again: {}.",
                    self.default.model_name()
                )
            }
            (Some(name), None) => self.pick(chat, name, cancel)?,
            _ => USAGE.to_string(),
        };
        Some(said)
    }

    /// What the chat talks to, and what it may pick.
    fn status(&self, chat: &Session, cancel: &Receiver<()>) -> Option<String> {
        let agents = self.default.model_name();
        let choice = self.choice(chat);
        let mut out = match &choice {
            Some(model) => format!(
                "This chat talks to {model} ({}), chosen here; the agent's model is {agents} \
                 (`/model default` goes back to it).",
                self.client_of(&self.target(model)).whereabouts()
            ),
            None => format!(
                "This chat talks to {agents} ({}), the agent's model.",
                self.default.whereabouts()
            ),
        };
        if let Some(allowed) = &self.allowed {
            out.push_str("\n\n");
            out.push_str(&allowed_said(allowed));
            return Some(out);
        }
        let current = choice.unwrap_or(agents);
        match self.listed(&self.default, cancel)? {
            Ok(models) => {
                let names = shown(&models, &current);
                match names.is_empty() {
                    true => out.push_str("\n\nThe server lists no other model to talk to."),
                    false => out.push_str(&format!(
                        "\n\n`/model NAME` switches this chat to another: {names}."
                    )),
                }
            }
            Err(why) => out.push_str(&format!(
                "\n\n`/model NAME` switches this chat to another model of the server (its list \
                 could not be read: {why})."
            )),
        }
        for other in &self.others {
            let kind = other.kind().map_or("openai", ProviderKind::prefix);
            let names = match self.listed(other, cancel)? {
                Ok(models) => shown(&models, ""),
                Err(why) => format!("its list could not be read: {why}"),
            };
            out.push_str(&format!(
                "\n\n`/model {kind}/NAME` switches it to a model of {}: {names}.",
                other.whereabouts()
            ));
        }
        Some(out)
    }

    /// Pick `name` for the chat, if the server lists it (or cannot say).
    fn pick(&self, chat: &Session, name: &str, cancel: &Receiver<()>) -> Option<String> {
        if !plausible(name) {
            return Some(format!(
                "“{}” is not a model name. {USAGE}",
                crate::text::clip(name, 40)
            ));
        }
        let agents = self.default.model_name();
        let target = self.target(name);
        let there = match target {
            Target::Missing(kind) => {
                return Some(format!(
                    "“{name}” is a model of {kind}, and the agent has no {kind} key ({} is not \
                     set in its environment).",
                    kind.key_var()
                ))
            }
            Target::Other(_, there) | Target::Agents(there) => there,
        };
        if matches!(target, Target::Agents(_)) && there == agents {
            self.set(chat, None);
            return Some(format!("This chat talks to the agent's model: {agents}."));
        }
        let check = match &self.allowed {
            // The operator named the models: the server need not be asked.
            Some(allowed) if allowed.iter().any(|m| m == name) => Check::Listed,
            Some(allowed) => return Some(allowed_said(allowed)),
            None => self.check(self.client_of(&target), there, cancel)?,
        };
        let unchecked = match check {
            Check::NotListed(answer) => return Some(answer),
            Check::Listed => String::new(),
            Check::Unchecked(why) => format!(
                "; the server's list could not be read ({why}), so the name is not checked: a \
                 wrong one shows in the next reply"
            ),
        };
        // Kept as named: a prefix says where it is.
        self.set(chat, Some(name));
        log::info!(
            "{}/{}: talks to {name} from now on (/model)",
            chat.channel,
            chat.id
        );
        let at = match target {
            Target::Other(..) => format!(" ({})", self.client_of(&target).whereabouts()),
            _ => String::new(),
        };
        Some(format!(
            "This chat talks to {name}{at} from now on{unchecked}. `/model default` goes back to {agents}."
        ))
    }

    /// What the server's list says of `name`; `None` when `cancel` ended the wait.
    fn check(&self, llm: &Llm, name: &str, cancel: &Receiver<()>) -> Option<Check> {
        Some(match self.listed(llm, cancel)? {
            Ok(models) if models.iter().any(|(id, _)| id == name) => Check::Listed,
            Ok(models) => {
                let close = close_names(&models, name);
                let hint = match close.is_empty() {
                    true => "`/model` lists the ones it has.".to_string(),
                    false => format!("Close: {}.", close.join(", ")),
                };
                Check::NotListed(format!("{} lists no model “{name}”. {hint}", llm.whereabouts()))
            }
            Err(why) => Check::Unchecked(why),
        })
    }

    /// Whether a chat may talk to `model` now.
    fn may_pick(&self, model: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.iter().any(|m| m == model))
    }

    /// The chat's own choice, if any, while the operator allows it.
    fn choice(&self, chat: &Session) -> Option<String> {
        let chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        chosen.get(&key(chat)).filter(|m| self.may_pick(m)).cloned()
    }

    /// Keep `model` as the chat's choice (none: the agent's), in memory and on disk.
    fn set(&self, chat: &Session, model: Option<&str>) {
        let mut chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        match model {
            Some(m) => chosen.insert(key(chat), m.to_string()),
            None => chosen.remove(&key(chat)),
        };
        if let Err(e) = save(&self.file, &chosen) {
            log::warn!(
                "the chats' models could not be kept in {}: {e} (they hold until a restart)",
                self.file.display()
            );
        }
    }

    /// The server's models, asked on a thread of its own so `cancel` ends the wait;
    /// `None` when it did.
    fn listed(&self, llm: &Llm, cancel: &Receiver<()>) -> Option<Result<Vec<(String, i64)>, String>> {
        let llm = llm.clone();
        crate::aside::wait("model-list", move || llm.list_models(), cancel)
    }
}

/// What is known of a model's name a chat picks.
enum Check {
    /// The server lists it (or the operator allows it).
    Listed,
    /// The server's list could not be read, for this reason.
    Unchecked(String),
    /// The server lists no such model: what the user is told.
    NotListed(String),
}

/// What a chat may pick, as the operator set it.
fn allowed_said(allowed: &[String]) -> String {
    match allowed {
        [] => "Every chat talks to the agent's model here (its operator set `models` to none).".into(),
        some => format!(
            "`/model NAME` switches this chat to another its operator allows: {}.",
            some.join(", ")
        ),
    }
}

const USAGE: &str =
    "`/model` shows the model this chat talks to; `/model NAME` switches to another; `/model default` goes back to the agent's.";

/// A chat's key in the file: `telegram/123`.
fn key(chat: &Session) -> String {
    format!("{}/{}", chat.channel, chat.id)
}

/// Whether `name` can be a model's name: letters, digits and `.-_:/@`, not too long.
pub fn plausible(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_:/@".contains(c);
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(allowed)
}

/// The models worth offering a chat among `models` (as listed), newest first: at
/// OpenAI's own API, its chat models (not its image, speech, embedding or moderation
/// models, nor dated snapshots); at a router that names models by vendor (OpenRouter),
/// the current model's vendor's; elsewhere all.
fn choices(models: &[(String, i64)], current: &str) -> Vec<String> {
    let openai = models
        .iter()
        .any(|(id, _)| id.starts_with("dall-e") || id.starts_with("whisper"));
    let vendor = current.split_once('/').map(|(v, _)| format!("{v}/"));
    let mut kept: Vec<(usize, &(String, i64))> = models
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| match (&vendor, openai) {
            (Some(v), _) => id.starts_with(v.as_str()),
            (None, true) => crate::successor::openai_chat_model(id),
            (None, false) => true,
        })
        .collect();
    kept.sort_by_key(|(i, (_, created))| (std::cmp::Reverse(*created), *i));
    kept.into_iter().map(|(_, (id, _))| id.clone()).collect()
}

/// The [`choices`] among `models` as `/model` names them: [`MAX_SHOWN`] at most, and how
/// many more.
fn shown(models: &[(String, i64)], current: &str) -> String {
    let all = choices(models, current);
    let mut names = all[..all.len().min(MAX_SHOWN)].join(", ");
    if all.len() > MAX_SHOWN {
        names.push_str(&format!(" and {} more", all.len() - MAX_SHOWN));
    }
    names
}

/// Listed names close to `name`: those holding the most of its words (of two characters
/// or more: `claude-sonnet-4-7` finds `claude-sonnet-4-6` before `claude-opus-4-5`), in
/// the server's order, at most [`MAX_CLOSE`].
fn close_names(models: &[(String, i64)], name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 2)
        .collect();
    let shared = |id: &str| {
        let id = id.to_ascii_lowercase();
        words.iter().filter(|w| id.contains(**w)).count()
    };
    let most = models.iter().map(|(id, _)| shared(id)).max().unwrap_or(0);
    if most == 0 {
        return Vec::new();
    }
    models
        .iter()
        .map(|(id, _)| id)
        .filter(|id| shared(id) == most)
        .take(MAX_CLOSE)
        .cloned()
        .collect()
}

/// The choices kept in `file`; none when it is missing or unreadable (said in the log).
fn load(file: &Path) -> BTreeMap<String, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            log::warn!(
                "{} could not be read ({e}); every chat talks to the agent's model",
                file.display()
            );
            return BTreeMap::new();
        }
    };
    let parsed = tether::depth::check(text.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::from_str::<BTreeMap<String, String>>(&text).map_err(|e| e.to_string()));
    match parsed {
        Ok(chosen) => chosen.into_iter().filter(|(_, m)| plausible(m)).collect(),
        Err(e) => {
            log::warn!(
                "{} is not a chat → model map ({e}); every chat talks to the agent's model",
                file.display()
            );
            BTreeMap::new()
        }
    }
}

/// Replace `file` whole with `chosen`, under a temporary name first.
fn save(file: &Path, chosen: &BTreeMap<String, String>) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(chosen).map_err(std::io::Error::other)?;
    crate::blobs::put(&text, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn listed(ids: &[(&str, i64)]) -> Vec<(String, i64)> {
        ids.iter().map(|(id, c)| (id.to_string(), *c)).collect()
    }

    #[test]
    fn openais_list_offers_its_chat_models_newest_first() {
        let models = listed(&[
            ("gpt-4.1", 10),
            ("dall-e-3", 5),
            ("whisper-1", 5),
            ("gpt-5.5", 30),
            ("gpt-5.5-mini", 30),
            ("gpt-5.5-2026-08-01", 29),
            ("gpt-4o-mini-tts", 20),
            ("gpt-realtime", 25),
            ("text-embedding-3-large", 3),
            ("o3", 15),
            ("omni-moderation-latest", 4),
            ("gpt-image-1", 18),
            ("gpt-5-search-api", 21),
        ]);
        assert_eq!(
            choices(&models, "gpt-5.5"),
            ["gpt-5.5", "gpt-5.5-mini", "o3", "gpt-4.1"]
        );
    }

    #[test]
    fn a_router_offers_the_current_vendors_models_and_another_server_all() {
        let router = listed(&[
            ("anthropic/claude-sonnet-4.6", 0),
            ("openai/gpt-5.5", 0),
            ("anthropic/claude-opus-4.7", 0),
        ]);
        assert_eq!(
            choices(&router, "anthropic/claude-sonnet-4.6"),
            ["anthropic/claude-sonnet-4.6", "anthropic/claude-opus-4.7"]
        );
        let ollama = listed(&[("llama3.2:latest", 0), ("qwen3:8b", 0)]);
        assert_eq!(choices(&ollama, "qwen3:8b"), ["llama3.2:latest", "qwen3:8b"]);
    }

    #[test]
    fn names_close_to_a_wrong_one_are_suggested() {
        let models = listed(&[
            ("claude-sonnet-4-6", 0),
            ("claude-opus-4-7", 0),
            ("claude-haiku-4-5", 0),
        ]);
        assert_eq!(close_names(&models, "sonnet"), ["claude-sonnet-4-6"]);
        assert_eq!(
            close_names(&models, "claude-opus-5"),
            ["claude-opus-4-7"],
            "the one sharing most of its words"
        );
        assert_eq!(
            close_names(&models, "Claude"),
            ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5"],
            "all that share as many, in the server's order"
        );
        assert!(close_names(&models, "gpt").is_empty());
    }

    #[test]
    fn a_model_name_is_plain() {
        for ok in [
            "gpt-5.5",
            "anthropic/claude-sonnet-4.6",
            "qwen3:8b",
            "models/gemini-2.5-pro@001",
        ] {
            assert!(plausible(ok), "{ok}");
        }
        for bad in ["", "gpt 5", "a\nb", "<b>", "`x`", &"m".repeat(201)] {
            assert!(!plausible(bad), "{bad:?}");
        }
    }

    #[test]
    fn choices_are_kept_whole_and_a_bad_file_is_no_choice() {
        let dir = TempDir::new("chat-models");
        let file = dir.path().join(".aegis/chat-models.json");
        assert!(load(&file).is_empty());
        let mut chosen = BTreeMap::new();
        chosen.insert("telegram/5".to_string(), "gpt-5.5-mini".to_string());
        save(&file, &chosen).unwrap();
        assert_eq!(load(&file), chosen);
        std::fs::write(&file, r#"{"telegram/5": "gpt 5 <b>", "telegram/6": "o3"}"#).unwrap();
        assert_eq!(
            load(&file).into_iter().collect::<Vec<_>>(),
            [("telegram/6".to_string(), "o3".to_string())],
            "an implausible name is dropped"
        );
        std::fs::write(&file, "[1, 2").unwrap();
        assert!(load(&file).is_empty());
    }
}
