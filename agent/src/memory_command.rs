//! `/memory` in a chat: what the agent remembers that comes back there, and forgetting
//! one. Answered by the agent without the model, so what it keeps about a person is
//! theirs to see and remove in so many words, past a daily limit too.

use crate::memory::{Here, Memory, MemoryStore};

/// Memories listed at most (newest first): a Telegram message holds about 4,000
/// characters.
const SHOWN: usize = 25;
/// Characters of a memory's text in the list.
const TEXT_SHOWN: usize = 120;

/// Who asks, and what their tools let them do.
#[derive(Debug, Clone, Copy)]
pub struct Asker {
    /// The chat is the asker's own private one: memories about them may be listed.
    pub private: bool,
    /// `memory_search` is among their tools.
    pub may_list: bool,
    /// `memory_delete` is among their tools.
    pub may_forget: bool,
}

const NOT_YOURS: &str = "Memory is not among the tools this agent gives you.";

impl MemoryStore {
    /// The answer to `/memory REST` `here`, asked by `asker`.
    pub fn command(&self, rest: &str, here: &Here, asker: Asker) -> String {
        let mut words = rest.split_whitespace();
        match words.next().map(str::to_ascii_lowercase).as_deref() {
            None if asker.may_list => self.listing(here, asker),
            Some("forget" | "delete") if asker.may_forget => match (words.next(), words.next()) {
                (Some(id), None) => self.forget(id, here),
                _ => "Name one memory by its id, as /memory lists them: `/memory forget ID`.".into(),
            },
            None | Some("forget" | "delete") => NOT_YOURS.into(),
            Some(_) => {
                "`/memory` lists what the agent remembers here; `/memory forget ID` forgets one.".into()
            }
        }
    }

    fn listing(&self, here: &Here, asker: Asker) -> String {
        let recalled = match self.recalled(here) {
            Ok(r) => r,
            Err(why) => return format!("⚠️ The memories cannot be read: {why}"),
        };
        // What is about one person is not read out to a group they write in.
        let (shown, about_you): (Vec<Memory>, Vec<Memory>) = recalled
            .into_iter()
            .partition(|m| asker.private || m.scope != "user");
        let mut out = if shown.is_empty() {
            "The agent remembers nothing that comes back in this chat. Ask it to: \"remember that \
             I prefer metric units\"."
                .to_string()
        } else {
            let mut out = "What the agent remembers here (newest first):".to_string();
            for m in shown.iter().take(SHOWN) {
                out.push_str(&format!("\n`{}` {}: {}", m.id, reach(m), shortened(&m.text)));
            }
            if shown.len() > SHOWN {
                out.push_str(&format!(
                    "\n…and {} older ones (the agent's memory_search finds them).",
                    shown.len() - SHOWN
                ));
            }
            if asker.may_forget {
                out.push_str("\n`/memory forget ID` forgets one.");
            }
            out
        };
        if !about_you.is_empty() {
            let (n, are) = match about_you.len() {
                1 => ("1 memory".to_string(), "is"),
                n => (format!("{n} memories"), "are"),
            };
            out.push_str(&format!(
                "\n({n} about you {are} listed in your private chat with the bot.)"
            ));
        }
        out
    }

    fn forget(&self, id: &str, here: &Here) -> String {
        let id = crate::text::full_id(id, "m-");
        let text = self
            .recalled(here)
            .ok()
            .and_then(|all| all.into_iter().find(|m| m.id == id))
            .map(|m| shortened(&m.text));
        match (self.delete(&id, here), text) {
            (Ok(()), Some(text)) => format!("🗑 Forgot {id}: {text}"),
            (Ok(()), None) => format!("🗑 Forgot {id}."),
            (Err(why), _) => format!("⚠️ {}", why.replacen("no memory", "No memory", 1)),
        }
    }
}

/// Where a memory comes back, in the asker's words.
fn reach(m: &Memory) -> &'static str {
    match m.scope.as_str() {
        _ if m.everyones() => "(every chat)",
        "user" => "(about you)",
        _ => "(this chat)",
    }
}

fn shortened(text: &str) -> String {
    crate::text::one_line(text, TEXT_SHOWN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryConfig;
    use crate::testutil::TempDir;

    fn at(session: &str, user: &str, guest: bool) -> Here {
        Here {
            session: session.into(),
            user: Some(user.into()),
            guest,
        }
    }

    const ALL: Asker = Asker {
        private: true,
        may_list: true,
        may_forget: true,
    };

    #[test]
    fn a_chat_sees_and_forgets_what_comes_back_in_it() {
        let d = TempDir::new("memory-command");
        let s = MemoryStore::new(d.path(), MemoryConfig::default());
        let alice = at("telegram/42", "42", false);
        let alice_in_group = at("telegram/-100", "42", false);
        let bob_in_group = at("telegram/-100", "7", true);
        s.store("The team meets on Mondays", &[], None, &alice).unwrap();
        s.store("Alice is allergic to peanuts", &[], Some("user"), &alice)
            .unwrap();
        s.store(
            "The group plans a trip to Lisbon",
            &[],
            Some("session"),
            &bob_in_group,
        )
        .unwrap();
        s.store("Bob likes green tea", &[], Some("user"), &bob_in_group)
            .unwrap();

        let private = s.command("", &alice, ALL);
        assert_eq!(
            private,
            "What the agent remembers here (newest first):\n\
             `m-2` (about you): Alice is allergic to peanuts\n\
             `m-1` (every chat): The team meets on Mondays\n\
             `/memory forget ID` forgets one."
        );
        let group = Asker {
            private: false,
            ..ALL
        };
        let in_group = s.command("", &alice_in_group, group);
        assert!(
            in_group.contains("`m-3` (this chat): The group plans a trip to Lisbon"),
            "{in_group}"
        );
        assert!(
            !in_group.contains("peanuts") && !in_group.contains("green tea"),
            "{in_group}"
        );
        assert!(
            in_group.ends_with("(1 memory about you is listed in your private chat with the bot.)"),
            "{in_group}"
        );

        // A guest forgets what is theirs or the chat's, not what every chat recalls.
        assert_eq!(
            s.command("forget m-1", &bob_in_group, group),
            "⚠️ memory m-1 is kept for every conversation; only the agent's trusted users (AEGIS_TRUSTED_USERS) delete it"
        );
        assert_eq!(
            s.command("forget 3", &bob_in_group, group),
            "🗑 Forgot m-3: The group plans a trip to Lisbon"
        );
        assert_eq!(
            s.command("forget m-2", &bob_in_group, group),
            "⚠️ No memory \"m-2\""
        );
        assert_eq!(
            s.command("forget m-2", &alice, ALL),
            "🗑 Forgot m-2: Alice is allergic to peanuts"
        );
        assert!(!s.command("", &alice, ALL).contains("peanuts"));

        // Without the memory tools, neither.
        let none = Asker {
            may_list: false,
            may_forget: false,
            ..ALL
        };
        assert_eq!(s.command("", &alice, none), NOT_YOURS);
        assert_eq!(s.command("forget m-1", &alice, none), NOT_YOURS);
        let list_only = Asker {
            may_forget: false,
            ..ALL
        };
        assert!(!s.command("", &alice, list_only).contains("forget"));
        assert_eq!(s.command("forget m-1", &alice, list_only), NOT_YOURS);
        assert!(s.command("forget", &alice, ALL).starts_with("Name one memory"));
        assert!(s.command("recall", &alice, ALL).starts_with("`/memory` lists"));
        assert_eq!(
            s.command("forget m-1", &alice, ALL),
            "🗑 Forgot m-1: The team meets on Mondays"
        );
        let empty = s.command("", &at("telegram/9", "9", false), ALL);
        assert!(empty.starts_with("The agent remembers nothing"), "{empty}");
    }

    #[test]
    fn a_long_memory_list_is_cut_with_a_count() {
        let d = TempDir::new("memory-command-long");
        let s = MemoryStore::new(d.path(), MemoryConfig::default());
        let here = at("telegram/42", "42", false);
        for i in 0..SHOWN + 4 {
            s.store(&format!("fact {i} {}", "w".repeat(200)), &[], None, &here)
                .unwrap();
        }
        let list = s.command("", &here, ALL);
        assert_eq!(list.lines().filter(|l| l.starts_with("`m-")).count(), SHOWN);
        assert!(list.contains("…and 4 older ones"), "{list}");
        assert!(
            list.contains(&format!("fact 28 {}…", "w".repeat(TEXT_SHOWN - 8))),
            "{list}"
        );
        assert!(list.chars().count() < 4000, "{}", list.chars().count());
    }
}
