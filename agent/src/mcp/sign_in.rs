//! A remote server's sign-in as its connection sees it ([`crate::mcp_oauth`] has the
//! flow): the token that goes with each request, refreshed when it is about to expire or
//! is refused, and, when no token will do, the tool that asks the user to sign in.
//!
//! A server signs in this way when it is at a URL and its configuration gives no
//! `Authorization` header (one that does keeps its own credentials).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::{plain, start_in_background, Conn, McpError, McpServers, Server};
use crate::elicit::{Unanswered, User};
use crate::llm::ToolSpec;
use crate::mcp_oauth::{OAuthConfig, SignIn, SignInError};
use crate::oauth_discovery::{authorization_server, Challenge};
use crate::oauth_store::{Client, Grant};
use crate::tools::Outcome;

impl Server {
    /// Whether it signs in by OAuth when it asks.
    pub(super) fn oauth(&self) -> bool {
        self.config.url.is_some()
            && !self
                .config
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("authorization"))
    }

    /// The tool that signs in, as offered to the model.
    pub(super) fn sign_in_tool(&self) -> String {
        plain(&format!("{}_sign_in", self.name)).take(64).collect()
    }

    /// The sign-in tool, while the server waits for the user to sign in.
    pub(super) fn sign_in_spec(&self) -> Option<ToolSpec> {
        self.sign_in.lock().expect("mcp sign-in lock").as_ref()?;
        let host = self
            .config
            .url
            .as_deref()
            .and_then(crate::elicit::host_of)
            .unwrap_or_default();
        Some(ToolSpec {
            name: self.sign_in_tool(),
            description: format!(
                "Sign in to the MCP server “{}” ({host}). Its tools are offered once the user \
                 has signed in: call this when the user asks for something it may do, or asks \
                 to connect it. It asks the user in the chat to open a sign-in page.",
                self.name
            ),
            input_schema: serde_json::json!({"type": "object", "properties": {}}),
        })
    }

    /// Start the process, or open the session: with a token refreshed once when the
    /// server refuses the one kept, and, when none will do, the sign-in tool offered.
    pub(super) fn connect(&self) -> Result<Conn, McpError> {
        let first = self.connect_once();
        let challenge = match first {
            Err(McpError::Unauthorized(c, _)) if self.oauth() => *c,
            other => return other,
        };
        if self.refresh_kept() {
            match self.connect_once() {
                Err(McpError::Unauthorized(c, _)) => return Err(self.needs_sign_in(*c)),
                other => return other,
            }
        }
        Err(self.needs_sign_in(challenge))
    }

    /// Offer the sign-in tool until the user signs in; the error that says so.
    pub(super) fn needs_sign_in(&self, challenge: Challenge) -> McpError {
        let more = challenge.insufficient_scope();
        log::info!(
            "MCP [{}]: the user has to sign in{}",
            self.name,
            if more { " again, for more access" } else { "" }
        );
        *self.sign_in.lock().expect("mcp sign-in lock") = Some(challenge);
        McpError::SignIn {
            tool: self.sign_in_tool(),
            more,
        }
    }

    /// The access token kept for the server at `url`, refreshed first when it is about to
    /// expire.
    pub(super) fn signed_in_token(&self, url: &str) -> Option<String> {
        if !self.oauth() {
            return None;
        }
        let grant = self.grants.grant(&self.name, url)?;
        if grant.expiring(crate::mcp_oauth::now()) {
            if let Some(fresh) = self.refreshed(&grant) {
                return Some(fresh.access_token);
            }
        }
        Some(grant.access_token)
    }

    /// Refresh the kept token; whether a new one was kept.
    fn refresh_kept(&self) -> bool {
        let Some(Ok(url)) = self.config.url.as_deref().map(|u| self.endpoint(u)) else {
            return false;
        };
        match self.grants.grant(&self.name, &url) {
            Some(grant) => self.refreshed(&grant).is_some(),
            None => false,
        }
    }

    /// `grant` refreshed and kept; a refusal forgets it (the user signs in again), a
    /// failure to reach the server keeps it for the next try.
    fn refreshed(&self, grant: &Grant) -> Option<Grant> {
        grant.refresh_token.as_ref()?;
        let client = self.client_of(&grant.issuer)?;
        match crate::mcp_oauth::refresh(grant, &client) {
            Ok(fresh) => {
                log::info!("MCP [{}]: token refreshed", self.name);
                self.grants.keep(&self.name, Some(&fresh));
                Some(fresh)
            }
            Err(e) => {
                log::warn!("MCP [{}]: refreshing the token failed: {}", self.name, e.why);
                if e.refused {
                    self.grants.keep(&self.name, None);
                }
                None
            }
        }
    }

    /// Its `oauth` settings, the secret's variables expanded.
    fn oauth_config(&self) -> Result<OAuthConfig, McpError> {
        let mut config = self.config.oauth.clone().unwrap_or_default();
        if let Some(secret) = &config.client_secret {
            config.client_secret = Some(self.expand("oauth.client_secret", secret)?);
        }
        Ok(config)
    }

    /// The client it signs in as with `issuer`: the configured one, else the one
    /// registered there.
    fn client_of(&self, issuer: &str) -> Option<Client> {
        let config = self.oauth_config().ok()?;
        match config.client_id {
            Some(id) => Some(Client {
                issuer: issuer.to_string(),
                client_id: id,
                client_secret: config.client_secret,
                redirect_uri: config
                    .redirect_uri
                    .unwrap_or_else(|| crate::mcp_oauth::REDIRECT_URI.to_string()),
                auth_method: None,
            }),
            None => self.grants.client(issuer),
        }
    }

    /// The sign-in tool's call: the user signs in (`user` asks them), the tokens are
    /// kept, and the server is connected; what the model is told.
    pub(super) fn sign_in(&self, user: Option<&dyn User>) -> Outcome {
        let done = |text: String| Outcome::Done(text);
        let Some(user) = user else {
            return done(format!(
                "error: nobody can sign in to MCP server {} from here (a scheduled task's run): \
                 the user signs in from the chat",
                self.name
            ));
        };
        let prepared = self
            .config
            .url
            .as_deref()
            .map(|u| self.endpoint(u))
            .unwrap_or_else(|| Err(McpError::Config("`url` is missing".into())))
            .and_then(|url| Ok((url, self.oauth_config()?)));
        let (url, config) = match prepared {
            Ok(p) => p,
            Err(e) => return done(format!("error: MCP server {} cannot be used: {e}", self.name)),
        };
        let challenge = self
            .sign_in
            .lock()
            .expect("mcp sign-in lock")
            .clone()
            .unwrap_or_default();
        let granted = self.grants.grant(&self.name, &url).and_then(|g| g.scope);
        let s = SignIn {
            server: &self.name,
            url: &url,
            config: &config,
            challenge: &challenge,
            granted: granted.as_deref(),
            store: &self.grants,
        };
        let grant = match crate::mcp_oauth::sign_in(&s, user) {
            Ok(signed) => signed,
            Err(SignInError::Declined(why)) => {
                return done(format!("error: not signed in to MCP server {}: {why}", self.name))
            }
            Err(SignInError::Unanswered(Unanswered::Stopped)) => return Outcome::Cancelled,
            Err(SignInError::Unanswered(Unanswered::Silent)) => {
                return done(format!(
                    "error: the user did not sign in to MCP server {} within {} minutes",
                    self.name,
                    super::ASK_WAIT.as_secs() / 60
                ))
            }
            Err(SignInError::Failed(why)) => {
                return done(format!(
                    "error: signing in to MCP server {} failed: {why}",
                    self.name
                ))
            }
        };
        self.grants.keep(&self.name, Some(&grant));
        *self.sign_in.lock().expect("mcp sign-in lock") = None;
        let mut conn = self.conn.lock().expect("mcp conn lock");
        *conn = None;
        if let Err(e) = self.ensure(&mut conn) {
            return done(format!(
                "error: signed in, but MCP server {} still fails: {e}",
                self.name
            ));
        }
        let tools: Vec<String> = self
            .tools
            .lock()
            .expect("mcp tools lock")
            .iter()
            .map(|t| t.spec.name.clone())
            .collect();
        done(format!(
            "Signed in to the MCP server {}. Its tools are offered from now on: {}.",
            self.name,
            tools.join(", ")
        ))
    }

    /// Sign the user out (`/mcp sign_out NAME`): the grant forgotten here at once
    /// (whatever becomes of the rest), the connection, which carries its token, replaced,
    /// its tools gone with it, so the next use asks for a sign-in again (with another
    /// account, if the user likes); then the grant revoked at its authorization server
    /// where that offers it (RFC 7009), a wait `cancel` (the user's `/stop`) ends. What
    /// the user is told.
    pub(super) fn sign_out(self: &Arc<Self>, cancel: &Receiver<()>) -> String {
        if !self.oauth() {
            let why = match self.config.url {
                None => "it is a program the agent runs",
                Some(_) => "its credentials are agent.json's `headers`",
            };
            return format!(
                "The MCP server {} is not signed in from the chat: {why}.",
                self.name
            );
        }
        let Some(grant) = self.grants.grant_of(&self.name) else {
            return format!("You are not signed in to the MCP server {}.", self.name);
        };
        let at = crate::elicit::host_of(&grant.issuer).unwrap_or_default();
        let client = self.client_of(&grant.issuer);
        self.grants.keep(&self.name, None);
        self.tools.lock().expect("mcp tools lock").clear();
        self.reconnect.store(true, Ordering::SeqCst);
        start_in_background(self);
        log::info!("MCP [{}]: signed out", self.name);
        let revoked = revoke_aside(grant, client, cancel);
        signed_out_words(&self.name, &at, revoked)
    }
}

/// What became of a sign-out's revocation.
#[derive(Debug, PartialEq)]
enum Revoked {
    /// The authorization server revoked the tokens.
    Yes,
    /// It offers no revocation.
    NotOffered,
    /// It failed, for this reason.
    Failed(String),
    /// The user stopped waiting (the revocation goes on, unseen).
    Stopped,
}

/// Revoke `grant`'s tokens (as `client`) on a thread of their own, so `cancel` ends the
/// wait at once: the authorization server's metadata and then each revocation may take
/// up to their timeouts, and the chat waits for nothing else meanwhile.
fn revoke_aside(grant: Grant, client: Option<Client>, cancel: &Receiver<()>) -> Revoked {
    let revoke = move || {
        let revoked = client
            .ok_or_else(|| "the client it signed in as is not known any more".to_string())
            .and_then(|client| {
                let endpoint = authorization_server(&grant.issuer)?.revocation_endpoint;
                match endpoint {
                    Some(endpoint) => crate::mcp_oauth::revoke(&grant, &client, &endpoint).map(|()| true),
                    None => Ok(false),
                }
            });
        match revoked {
            Ok(true) => Revoked::Yes,
            Ok(false) => Revoked::NotOffered,
            Err(why) => Revoked::Failed(why),
        }
    };
    crate::aside::wait("mcp-revoke", revoke, cancel).unwrap_or(Revoked::Stopped)
}

/// What the user is told of signing out of server `name`, whose authorization server is
/// at `at`.
fn signed_out_words(name: &str, at: &str, revoked: Revoked) -> String {
    let forgotten = format!("Signed out of the MCP server {name}: its tokens are forgotten here");
    let then = "The next time it is needed, you are asked to sign in again (with any account).";
    let remove = "remove the access in your account's settings there";
    match revoked {
        Revoked::Yes => format!("{forgotten} and were revoked at {at}. {then}"),
        Revoked::NotOffered => format!(
            "{forgotten}. {at} offers no way to revoke them: the access you allowed stays until \
             it ends, or until you {remove}. {then}"
        ),
        Revoked::Failed(why) => {
            format!("{forgotten}, but revoking them at {at} failed ({why}): {remove}. {then}")
        }
        Revoked::Stopped => format!(
            "{forgotten}; you stopped waiting for {at} to revoke them: it may still do so, or \
             {remove}. {then}"
        ),
    }
}

impl McpServers {
    /// For a message holding a sign-in's address (a redirect address with a `code` or an
    /// `error`) when no sign-in waits for it (the agent restarted meanwhile, or the
    /// question ended), what the user is told. Such a message is answered without the
    /// model and kept out of the conversation: its code is of no use any more (the PKCE
    /// verifier died with the sign-in), but it is not the conversation's either.
    pub fn late_sign_in(&self, text: &str) -> Option<String> {
        let redirects: Vec<String> = self
            .servers
            .iter()
            .filter(|s| s.oauth())
            .map(|s| {
                let configured = s.config.oauth.as_ref().and_then(|o| o.redirect_uri.clone());
                configured.unwrap_or_else(|| crate::mcp_oauth::REDIRECT_URI.to_string())
            })
            .collect();
        let late = text.split_whitespace().any(|word| {
            redirects.iter().any(|r| {
                let query = word
                    .strip_prefix(r.as_str())
                    .and_then(|rest| rest.strip_prefix('?'));
                query.is_some_and(|q| {
                    q.split('&')
                        .any(|p| p.starts_with("code=") || p.starts_with("error="))
                })
            })
        });
        late.then(|| {
            "That is the address of a sign-in, but no sign-in waits for it any more (the agent \
             restarted, or the question ended), so it was not kept, and its code is of no use \
             now. Ask me again to use the server, and you get a new sign-in page."
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(configs: serde_json::Value) -> McpServers {
        let configs = serde_json::from_value(configs).unwrap();
        McpServers::new(configs, std::path::Path::new("/nonexistent"), &[])
    }

    #[test]
    fn signing_out_says_whether_the_access_was_revoked_or_stays() {
        let said = |r| signed_out_words("linear", "auth.example.com", r);
        assert!(said(Revoked::Yes).contains("forgotten here and were revoked at auth.example.com."));
        let kept = said(Revoked::NotOffered);
        assert!(
            kept.contains("auth.example.com offers no way to revoke them: the access you allowed stays"),
            "{kept}"
        );
        let failed = said(Revoked::Failed("HTTP 503".into()));
        assert!(
            failed.contains("but revoking them at auth.example.com failed (HTTP 503): remove the access"),
            "{failed}"
        );
        let stopped = said(Revoked::Stopped);
        assert!(
            stopped.contains("forgotten here; you stopped waiting for auth.example.com to revoke them"),
            "{stopped}"
        );
        for words in [said(Revoked::Yes), kept, failed, stopped] {
            assert!(words.starts_with("Signed out of the MCP server linear: its tokens are forgotten here"));
            assert!(words.ends_with("you are asked to sign in again (with any account)."));
        }
    }

    #[test]
    fn a_late_sign_in_address_is_one_with_a_code_or_error_at_a_redirect_address() {
        let s = servers(serde_json::json!({
            "linear": {"url": "https://mcp.linear.app/mcp"},
            "gh": {"url": "https://api.example.com/mcp", "oauth": {"client_id": "x", "redirect_uri": "https://me.example/cb"}},
        }));
        for late in [
            "http://127.0.0.1:33418/callback?code=abc&state=s",
            "here:\nhttp://127.0.0.1:33418/callback?state=s&code=abc thanks",
            "http://127.0.0.1:33418/callback?error=access_denied&state=s",
            "https://me.example/cb?code=1",
        ] {
            assert!(s.late_sign_in(late).is_some(), "{late}");
        }
        for not in [
            "http://127.0.0.1:33418/callback",
            "http://127.0.0.1:33418/callback?state=s",
            "http://127.0.0.1:33418/callbacks?code=abc",
            "http://127.0.0.1:33418/other?code=abc",
            "see https://me.example/cb?scode=1",
            "what is a code=abc?",
        ] {
            assert!(s.late_sign_in(not).is_none(), "{not}");
        }
        // Without a server that signs in, such a message is the conversation's.
        let plain = servers(serde_json::json!({
            "linear": {"url": "https://mcp.linear.app/mcp", "headers": {"Authorization": "Bearer t"}},
        }));
        assert!(plain
            .late_sign_in("http://127.0.0.1:33418/callback?code=abc")
            .is_none());
    }
}
