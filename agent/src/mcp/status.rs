//! `/mcp` [ours]: the MCP servers as the user can check them without the model (which
//! one runs, which failed and why, which waits for a sign-in, whom the agent is signed
//! in as), and `/mcp sign_out NAME`. Looking never starts or waits for a server: a
//! server busy with a call is said to be.
//!
//! Where a server is, is said by its host or its program's name alone: a URL's path or
//! query, or a program's arguments, can carry a key.

use std::sync::atomic::Ordering;

use super::{McpServers, Server};
use crate::oauth_store::Grant;

/// How to sign out, said under a list with a server that signs in.
const SIGN_OUT_HINT: &str =
    "`/mcp sign_out NAME` signs out of a server (to sign in with another account, say).";

impl McpServers {
    /// The answer to `/mcp` followed by `rest`: the servers' state, or a sign-out (whose
    /// revocation `cancel` stops waiting for).
    pub fn command(&self, rest: &str, cancel: &crossbeam_channel::Receiver<()>) -> String {
        let mut words = rest.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, ..) => self.status(),
            (Some("sign_out" | "signout" | "logout"), Some(name), None) => match self.named(name) {
                Some(s) => s.sign_out(cancel),
                None => format!("No MCP server is named “{name}”. {}", self.names_said()),
            },
            _ => "`/mcp` shows the MCP servers; `/mcp sign_out NAME` signs out of one.".into(),
        }
    }

    /// The server called `name` (in any case).
    fn named(&self, name: &str) -> Option<&std::sync::Arc<Server>> {
        let exact = self.servers.iter().find(|s| s.name == name);
        exact.or_else(|| self.servers.iter().find(|s| s.name.eq_ignore_ascii_case(name)))
    }

    fn names_said(&self) -> String {
        match self.names().as_slice() {
            [] => "No MCP server is attached.".into(),
            names => format!("They are: {}.", names.join(", ")),
        }
    }

    /// Every server's line.
    fn status(&self) -> String {
        if self.servers.is_empty() {
            return "No MCP server is attached: none is set up (agent.json `mcp`, \
                    .aegis/mcp.json), or AEGIS_TOOLS leaves MCP out."
                .into();
        }
        let mut out = format!("MCP servers ({}):", self.servers.len());
        for s in &self.servers {
            out.push_str(&format!("\n• {}", s.status()));
        }
        if self.servers.iter().any(|s| s.oauth()) {
            out.push_str(&format!("\n\n{SIGN_OUT_HINT}"));
        }
        out
    }
}

impl Server {
    /// One line: name, where, state, what it offers, and its sign-in.
    fn status(&self) -> String {
        let stdio = self.config.url.is_none();
        let at = match &self.config.url {
            Some(url) => crate::elicit::host_of(url).unwrap_or_else(|| "an address not understood".into()),
            None => {
                let program = self.config.command.rsplit('/').next().unwrap_or_default();
                format!("program {program}")
            }
        };
        let mut line = format!("{} ({at}): {}", self.name, self.state(stdio));
        if let Some(signed_in) = self.signed_in_as() {
            line.push(' ');
            line.push_str(&signed_in);
        }
        line
    }

    /// What it does now, and what it offers.
    fn state(&self, stdio: bool) -> String {
        let offers = self.offers();
        if self.starting.lock().expect("mcp starting lock").is_some() {
            return format!("starting.{offers}");
        }
        if let Some(challenge) = self.sign_in.lock().expect("mcp sign-in lock").as_ref() {
            return match challenge.insufficient_scope() {
                true => "waits for you to sign in again, allowing more: ask me to use it.".into(),
                false => {
                    "waits for you to sign in: ask me to use it, and I send you its sign-in page.".into()
                }
            };
        }
        let live = match self.conn.try_lock() {
            Ok(conn) => conn.as_ref().map(super::Conn::alive),
            Err(_) => return format!("busy with a call.{offers}"),
        };
        let error = self.last_error.lock().expect("mcp error lock").clone();
        match (live, error) {
            (Some(true), _) if stdio => format!("running.{offers}"),
            (Some(true), _) => format!("connected.{offers}"),
            (Some(false), _) if stdio => format!("exited; started again at its next use.{offers}"),
            (Some(false), _) => format!("disconnected; connected again at its next use.{offers}"),
            (None, Some(why)) => format!("failed: {why}. Tried again at its next use.{offers}"),
            (None, None) => format!("not running; started at its next use.{offers}"),
        }
    }

    /// Its tools and prompts as last listed (" 3 tools, 2 prompts."), "" without any.
    fn offers(&self) -> String {
        let tools = self.tools.lock().expect("mcp tools lock").len();
        let prompts = match self.prompts.load(Ordering::SeqCst) {
            true => self.prompts_seen.lock().expect("mcp prompts lock").len(),
            false => 0,
        };
        let count = |n: usize, what: &str| match n {
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        match (tools, prompts) {
            (0, 0) => String::new(),
            (t, 0) => format!(" {}.", count(t, "tool")),
            (t, p) => format!(" {}, {}.", count(t, "tool"), count(p, "prompt")),
        }
    }

    /// Whom the agent is signed in as, for a server that signs in and has a grant for
    /// its URL; no token is ever said.
    fn signed_in_as(&self) -> Option<String> {
        if !self.oauth() {
            return None;
        }
        let url = self.endpoint(self.config.url.as_deref()?).ok()?;
        let grant = self.grants.grant(&self.name, &url)?;
        Some(signed_in_words(&grant, crate::mcp_oauth::now()))
    }
}

/// "Signed in with HOST (scopes); ..." for `grant`, at `now`.
fn signed_in_words(grant: &Grant, now: u64) -> String {
    let host = crate::elicit::host_of(&grant.issuer).unwrap_or_default();
    let scope = match grant.scope.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => format!(" ({})", crate::oauth_discovery::clean(s)),
        _ => String::new(),
    };
    let renewed = grant.refresh_token.is_some();
    let then = match grant.expires_at.map(|t| t.saturating_sub(now)) {
        None => ".".to_string(),
        Some(0) if renewed => "; its token has ended and is renewed at its next use.".into(),
        Some(0) => "; its token has ended: you sign in again at its next use.".into(),
        Some(s) => {
            let when = match s {
                s if s < 120 => format!("{s} s"),
                s if s < 2 * 3600 => format!("{} min", s / 60),
                s => format!("{} h", s / 3600),
            };
            match renewed {
                true => format!("; its token ends in {when} and is renewed then."),
                false => format!("; its token ends in {when}, then you sign in again."),
            }
        }
    };
    format!("Signed in with {host}{scope}{then}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires_at: Option<u64>, refresh: bool, scope: Option<&str>) -> Grant {
        Grant {
            resource: "https://mcp.example.com/mcp".into(),
            issuer: "https://auth.example.com/tenant".into(),
            token_endpoint: "https://auth.example.com/token".into(),
            access_token: "at-secret".into(),
            refresh_token: refresh.then(|| "rt-secret".into()),
            expires_at,
            scope: scope.map(str::to_string),
        }
    }

    #[test]
    fn a_sign_in_is_said_by_its_issuer_scopes_and_end_never_its_tokens() {
        let now = 1_000_000;
        let cases = [
            (
                grant(Some(now + 3000), true, Some("read write")),
                "Signed in with auth.example.com (read write); its token ends in 50 min and is renewed then.",
            ),
            (
                grant(Some(now + 90), false, None),
                "Signed in with auth.example.com; its token ends in 90 s, then you sign in again.",
            ),
            (
                grant(Some(now + 3 * 3600 + 59), true, Some(" ")),
                "Signed in with auth.example.com; its token ends in 3 h and is renewed then.",
            ),
            (
                grant(Some(now - 5), true, Some("read\nwrite")),
                "Signed in with auth.example.com (read write); its token has ended and is renewed at its next use.",
            ),
            (grant(None, false, Some("read")), "Signed in with auth.example.com (read)."),
        ];
        for (g, said) in cases {
            let words = signed_in_words(&g, now);
            assert_eq!(words, said);
            assert!(!words.contains("secret"), "{words}");
        }
    }
}
