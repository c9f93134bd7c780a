//! The bot's command menu (`setMyCommands`, what Telegram shows for `/`): the gateway's
//! own commands, then the ones the agent answers of its own (its skills, its MCP
//! servers' prompts), as its `status.commands` frame lists them, in the shape Telegram
//! takes: a command of 1 to 32 lowercase letters, digits and `_`, a description of 1 to
//! 256 characters, 100 commands at most. What does not fit is left out, not refused.

use serde_json::{json, Value};
use tether::frame::Command;

use crate::telegram::TgError;

/// The gateway's own commands, first in the menu.
pub const OWN: [(&str, &str); 4] = [
    ("new", "Start a fresh conversation"),
    ("stop", "Stop the reply in progress"),
    ("usage", "Tokens the model used today, this week, this month"),
    (
        "skills",
        "The agent's skills and prompts, to start a message with",
    ),
];
/// Commands Telegram takes in one menu.
pub const MAX_COMMANDS: usize = 100;
/// Characters of a description Telegram takes.
const MAX_DESCRIPTION: usize = 256;
/// Characters of a command Telegram takes.
const MAX_COMMAND: usize = 32;

/// The menu for an agent that answers `agent`: the gateway's commands, then each of the
/// agent's that Telegram can show and no earlier one has taken, up to [`MAX_COMMANDS`].
pub fn merged(agent: &[Command]) -> Vec<Command> {
    let mut menu: Vec<Command> = OWN
        .iter()
        .map(|(command, description)| Command {
            command: command.to_string(),
            description: description.to_string(),
        })
        .collect();
    for c in agent {
        if menu.len() == MAX_COMMANDS {
            log::info!(
                "command menu: full at {MAX_COMMANDS}; /{} and later ones left out",
                c.command
            );
            break;
        }
        if !valid(&c.command) {
            log::debug!(
                "command menu: {:?} is not a Telegram command; left out",
                c.command
            );
            continue;
        }
        if menu.iter().any(|m| m.command == c.command) {
            continue;
        }
        menu.push(Command {
            command: c.command.clone(),
            description: description(&c.description, &c.command),
        });
    }
    menu
}

/// The command words of the bot's menu now (without `/`), shared by the renderer, which
/// learns the agent's, and the ingress, which takes a bare one in a group as the bot's.
#[derive(Debug, Clone, Default)]
pub struct Words(std::sync::Arc<std::sync::RwLock<Vec<String>>>);

impl Words {
    /// The words of `menu`.
    pub fn set(&self, menu: &[Command]) {
        let words = menu.iter().map(|c| c.command.clone()).collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = words;
    }

    /// Whether `word` (without `/`) is one of them.
    pub fn has(&self, word: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|w| w == word)
    }
}

/// Set `menu` (one of [`merged`]) with `call` (`setMyCommands` with the body given). A
/// menu Telegram refuses (too many commands for it, which some bots see well below the
/// documented 100, or one it does not take) is tried again with half the agent's
/// commands, down to the gateway's own.
pub fn set(mut menu: Vec<Command>, call: impl Fn(&Value) -> Result<Value, TgError>) {
    loop {
        match call(&json!({ "commands": menu })) {
            Ok(_) => {
                log::debug!("command menu set: {} commands", menu.len());
                return;
            }
            Err(TgError::Rejected(status, why)) if menu.len() > OWN.len() => {
                let keep = OWN.len() + (menu.len() - OWN.len()) / 2;
                log::warn!(
                    "command menu of {} commands refused ({status} {why}); trying {keep}",
                    menu.len()
                );
                menu.truncate(keep);
            }
            Err(e) => {
                log::warn!("command menu: {e}");
                return;
            }
        }
    }
}

/// 1 to 32 lowercase English letters, digits and underscores.
fn valid(command: &str) -> bool {
    (1..=MAX_COMMAND).contains(&command.len())
        && command
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `text` on one line, cut to what Telegram takes; the command itself when it is empty.
fn description(text: &str, command: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return format!("/{command}");
    }
    match line.char_indices().nth(MAX_DESCRIPTION - 1) {
        Some((cut, _)) if line[cut..].chars().count() > 1 => format!("{}…", &line[..cut]),
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(command: &str, description: &str) -> Command {
        Command {
            command: command.into(),
            description: description.into(),
        }
    }

    #[test]
    fn the_agents_commands_follow_the_gateways_as_telegram_takes_them() {
        let menu = merged(&[
            c("csv_report", "Summarise a CSV file.\nUse when: a CSV comes"),
            c("weekly-report", "a hyphen: not a command"),
            c("Upper", "upper case"),
            c("", "empty"),
            c(&"x".repeat(33), "too long"),
            c(&"y".repeat(32), ""),
            c("stop", "the gateway's own comes first"),
            c("csv_report", "twice"),
            c("github_review", &"é".repeat(300)),
        ]);
        let names: Vec<&str> = menu.iter().map(|m| m.command.as_str()).collect();
        let long = "y".repeat(32);
        assert_eq!(
            names,
            [
                "new",
                "stop",
                "usage",
                "skills",
                "csv_report",
                long.as_str(),
                "github_review"
            ]
        );
        assert_eq!(menu[1].description, "Stop the reply in progress");
        assert_eq!(menu[4].description, "Summarise a CSV file. Use when: a CSV comes");
        assert_eq!(menu[5].description, format!("/{long}"));
        assert_eq!(menu[6].description.chars().count(), 256);
        assert!(menu[6].description.ends_with("é…"));
        assert_eq!(merged(&[]).len(), OWN.len());
    }

    #[test]
    fn a_menu_holds_a_hundred_commands_at_most() {
        let many: Vec<Command> = (0..150).map(|i| c(&format!("skill_{i}"), "d")).collect();
        let menu = merged(&many);
        assert_eq!(menu.len(), MAX_COMMANDS);
        assert_eq!(menu.last().unwrap().command, "skill_95");
    }

    proptest! {
        /// Whatever the agent lists, the menu is one Telegram takes.
        #[test]
        fn any_list_gives_a_menu_telegram_takes(list in proptest::collection::vec(("\\PC{0,40}", "\\PC{0,300}"), 0..120)) {
            let agent: Vec<Command> = list.iter().map(|(a, b)| c(a, b)).collect();
            let menu = merged(&agent);
            prop_assert!(menu.len() <= MAX_COMMANDS);
            for (i, m) in menu.iter().enumerate() {
                prop_assert!(valid(&m.command), "{:?}", m.command);
                let n = m.description.chars().count();
                prop_assert!((1..=MAX_DESCRIPTION).contains(&n), "{n}");
                prop_assert!(!menu[..i].iter().any(|e| e.command == m.command));
            }
        }
    }
}
