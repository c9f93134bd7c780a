//! [ours] Who gets which tools. A bot open to strangers, or in a group, answers people the
//! operator does not trust with the agent's shell and files; with `AEGIS_TRUSTED_USERS`
//! set, only the people it names get every tool, and everyone else (a guest) gets the
//! tools `AEGIS_GUEST_TOOLS` names (default `web_fetch,web_search,image_search,memory`),
//! never more than the agent has. A guest's reply is offered only those, and a call of
//! any other (a model talked into naming one) is refused, not run.
//!
//! A scheduled task's run is its creator's: `cron_create` records who asked for the task,
//! and its runs get that person's tools; a task with no creator recorded (written before,
//! or by hand) runs as a guest's. Both settings come from the environment only: agent.json
//! is in the workspace, which the model can write.

use super::{Builtin, Selection};

/// The guests' default tools.
pub const DEFAULT_GUEST_TOOLS: &str = "web_fetch,web_search,image_search,memory";

/// Who is trusted, and what everyone else may use.
#[derive(Debug, Clone, PartialEq)]
pub struct Guests {
    /// `AEGIS_TRUSTED_USERS`: user ids, or `channel/id`.
    trusted: Vec<String>,
    /// What a guest's reply may use.
    pub tools: Selection,
}

impl Guests {
    /// From the environment (`var`), within the agent's own `tools`; `None` when no one is
    /// named trusted (everyone is).
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        tools: &Selection,
    ) -> Result<Option<Guests>, String> {
        let Some(named) = var("AEGIS_TRUSTED_USERS") else {
            if var("AEGIS_GUEST_TOOLS").is_some() {
                log::warn!(
                    "AEGIS_GUEST_TOOLS without AEGIS_TRUSTED_USERS: everyone is trusted, it does nothing"
                );
            }
            return Ok(None);
        };
        let trusted: Vec<String> = named
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if trusted.is_empty() {
            return Err("AEGIS_TRUSTED_USERS names no one (user ids, comma-separated)".into());
        }
        let spec = var("AEGIS_GUEST_TOOLS").unwrap_or_else(|| DEFAULT_GUEST_TOOLS.into());
        let mut guest = tools.clone();
        guest
            .narrow(&spec)
            .map_err(|e| e.replacen("AEGIS_TOOLS", "AEGIS_GUEST_TOOLS", 1))?;
        Ok(Some(Guests {
            trusted,
            tools: guest,
        }))
    }

    /// Whether `user` of `channel` is trusted.
    pub fn trusts(&self, channel: &str, user: &str) -> bool {
        self.trusted
            .iter()
            .any(|t| t == user || t.split_once('/') == Some((channel, user)))
    }

    /// The guests' tools, for the log: `web_fetch, memory_store, …, mcp`.
    pub fn describe(&self) -> String {
        let mut names: Vec<&str> = self.tools.builtins.iter().map(|b| b.name()).collect();
        if self.tools.mcp {
            names.push("MCP servers");
        }
        match names.is_empty() {
            true => "none".into(),
            false => names.join(", "),
        }
    }
}

/// What one reply may use: every tool, or a guest's.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowed {
    /// A trusted person's reply, or every reply when no one is named.
    All,
    /// A guest's reply.
    Guest(Selection),
}

impl Allowed {
    /// Whether built-in `b` may be offered and run.
    pub fn builtin(&self, b: Builtin) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Guest(s) => s.builtins.contains(&b),
        }
    }

    /// Whether the MCP servers' tools may be.
    pub fn mcp(&self) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Guest(s) => s.mcp,
        }
    }

    /// The built-ins of `all` this reply may use.
    pub fn builtins_of<'a>(&'a self, all: &'a [Builtin]) -> impl Iterator<Item = &'a Builtin> + 'a {
        all.iter().filter(move |b| self.builtin(**b))
    }
}

/// Built-ins as a set, for tests.
#[cfg(test)]
fn set(names: &[Builtin]) -> std::collections::BTreeSet<Builtin> {
    names.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn without_trusted_users_everyone_is_trusted() {
        assert_eq!(Guests::from_env(env(&[]), &Selection::all()), Ok(None));
        assert_eq!(
            Guests::from_env(env(&[("AEGIS_GUEST_TOOLS", "none")]), &Selection::all()),
            Ok(None)
        );
    }

    #[test]
    fn guests_get_the_named_tools_within_the_agents() {
        let g = Guests::from_env(
            env(&[("AEGIS_TRUSTED_USERS", "7, telegram/8")]),
            &Selection::all(),
        )
        .unwrap()
        .unwrap();
        assert!(
            g.tools.builtins.contains(&Builtin::WebFetch) && g.tools.builtins.contains(&Builtin::MemoryStore)
        );
        assert!(!g.tools.builtins.contains(&Builtin::Bash) && !g.tools.builtins.contains(&Builtin::ReadFile));
        assert!(!g.tools.mcp, "no MCP server by default");
        assert!(g.trusts("telegram", "7") && g.trusts("cli", "7"));
        assert!(g.trusts("telegram", "8") && !g.trusts("cli", "8"));
        assert!(!g.trusts("telegram", "9") && !g.trusts("telegram", "77"));
        // Never more than the agent's own.
        let mut agent = Selection::all();
        agent.builtins.remove(&Builtin::WebFetch);
        let g = Guests::from_env(
            env(&[
                ("AEGIS_TRUSTED_USERS", "7"),
                ("AEGIS_GUEST_TOOLS", "web_fetch,bash,mcp"),
            ]),
            &agent,
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.tools.builtins, set(&[Builtin::Bash]));
        assert!(g.tools.mcp);
        assert_eq!(g.describe(), "bash, MCP servers");
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Guests::from_env(
            env(&[
                ("AEGIS_TRUSTED_USERS", "7"),
                ("AEGIS_GUEST_TOOLS", "web,teleport"),
            ]),
            &Selection::all(),
        )
        .unwrap_err();
        assert!(
            e.starts_with("AEGIS_GUEST_TOOLS: unknown tool or group \"teleport\""),
            "{e}"
        );
        let e = Guests::from_env(env(&[("AEGIS_TRUSTED_USERS", " , ")]), &Selection::all()).unwrap_err();
        assert!(e.contains("names no one"), "{e}");
    }

    #[test]
    fn a_guests_reply_allows_only_the_guests_tools() {
        let g = Guests::from_env(env(&[("AEGIS_TRUSTED_USERS", "7")]), &Selection::all())
            .unwrap()
            .unwrap();
        let guest = Allowed::Guest(g.tools);
        assert!(guest.builtin(Builtin::WebFetch) && !guest.builtin(Builtin::Bash) && !guest.mcp());
        assert!(Allowed::All.builtin(Builtin::Bash) && Allowed::All.mcp());
        let all = [Builtin::Bash, Builtin::WebFetch];
        assert_eq!(guest.builtins_of(&all).collect::<Vec<_>>(), [&Builtin::WebFetch]);
    }
}
