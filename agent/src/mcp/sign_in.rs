//! A remote server's sign-in as its connection sees it ([`crate::mcp_oauth`] has the
//! flow): the token that goes with each request, refreshed when it is about to expire or
//! is refused, and, when no token will do, the tool that asks the user to sign in.
//!
//! A server signs in this way when it is at a URL and its configuration gives no
//! `Authorization` header (one that does keeps its own credentials).

use super::{plain, Conn, McpError, Server};
use crate::elicit::{Unanswered, User};
use crate::llm::ToolSpec;
use crate::mcp_oauth::{OAuthConfig, SignIn, SignInError};
use crate::oauth_discovery::Challenge;
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
}
