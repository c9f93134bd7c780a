//! The ureq settings every HTTP client of the kit starts from.

use ureq::config::ConfigBuilder;
use ureq::typestate::AgentScope;

/// Read buffer per connection and per layer; it also bounds a response's header block.
pub const INPUT_BUFFER: usize = 32 * 1024;
/// Write buffer per connection and per layer.
pub const OUTPUT_BUFFER: usize = 16 * 1024;

/// The environment variables that decide where the kit's HTTPS clients connect and what
/// they trust (ureq reads the proxies, [`crate::trust`] the certificates): a host passes
/// them on to what it runs, a test or a bench keeps the machine's out.
pub const NETWORK_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `ureq::Agent::config_builder()` for a client of `target` (its URL or base URL): small
/// connection buffers, the trusted roots [`crate::trust`] installed (feature `tls`), and
/// the proxy the environment names for its scheme ([`proxy_url`]), minus `NO_PROXY`,
/// except for a loopback target.
///
/// ureq gives each connection a 128 KiB read and a 128 KiB write buffer, zero-filled on
/// first use, and an HTTPS connection a second pair under its TLS layer: 512 KiB of
/// resident memory per pooled HTTPS connection, more than the whole rest of an idle
/// gateway. Everything we send and receive streams through them, so they only need to
/// hold one header block or one TLS record (16 KiB at most).
///
/// ureq would send loopback requests to the proxy as well; Go's clients (the Go kit) never
/// do, and an image or host that exports `HTTP_PROXY` without listing `localhost` in
/// `NO_PROXY` would otherwise cut the agent off from its harness and a local model.
pub fn agent_config(target: &str) -> ConfigBuilder<AgentScope> {
    let proxy = if is_loopback(target) {
        None
    } else {
        proxy_url(target, |name| std::env::var(name).ok()).and_then(|url| env_proxy(&url))
    };
    let builder = ureq::Agent::config_builder()
        .input_buffer_size(INPUT_BUFFER)
        .output_buffer_size(OUTPUT_BUFFER)
        .max_response_header_size(INPUT_BUFFER)
        .proxy(proxy);
    #[cfg(feature = "tls")]
    let builder = crate::trust::configure(builder);
    builder
}

/// The proxy URL the environment (`var`) names for a client of `target`, chosen by the
/// target's scheme as Go's clients (the Go kit) and curl choose it: `HTTPS_PROXY` for
/// `https`, `HTTP_PROXY` for `http` (upper case first, then lower case), then, as curl
/// does, `ALL_PROXY`. An empty variable counts as unset.
///
/// ureq's own choice is the first of `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` for every
/// scheme: a host exporting `HTTPS_PROXY` for the cloud would then send the agent's plain
/// HTTP to a model on the LAN through that proxy too, which the Go agent reaches directly.
pub fn proxy_url(target: &str, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let https = target
        .trim_start()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let names: [&str; 4] = if https {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names
        .into_iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
}

/// The proxy at `url` (HTTP `CONNECT`, or SOCKS with feature `socks`), with `NO_PROXY`'s
/// exceptions, or `None` (logged) when this build cannot use it: the client then connects
/// directly, as ureq does with such a variable. (Given as an explicit proxy, a SOCKS one
/// that ureq was built without would make it panic.)
fn env_proxy(url: &str) -> Option<ureq::Proxy> {
    use ureq::ProxyProtocol::{Http, Https};
    let parsed = match ureq::Proxy::new(url) {
        Ok(p) if cfg!(feature = "socks") || matches!(p.protocol(), Http | Https) => p,
        // Never the URL itself in a log: it may carry the proxy's password.
        Ok(_) => {
            log::warn!("proxy from the environment ignored: this build has no SOCKS support");
            return None;
        }
        Err(e) => {
            log::warn!("proxy from the environment ignored: {e}");
            return None;
        }
    };
    let mut builder = ureq::Proxy::builder(parsed.protocol())
        .host(parsed.host())
        .port(parsed.port());
    if let Some(user) = parsed.username() {
        builder = builder.username(user);
    }
    if let Some(password) = parsed.password() {
        builder = builder.password(password);
    }
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    for entry in no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        builder = builder.no_proxy(entry);
    }
    builder.build().ok()
}

/// The start of an error response's body (64 KiB at most, enough for any API's error
/// JSON), as text; empty when it cannot be read. Callers report it, never act on more.
pub fn error_text(resp: ureq::http::Response<ureq::Body>) -> String {
    resp.into_body()
        .into_with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default()
}

/// What an error body (see [`error_text`]) says: the `error.message` OpenAI, Anthropic and
/// JSON-RPC servers put there, else its first 200 characters. A router that passes on a
/// provider's refusal (OpenRouter: `"Provider returned error"`, the provider's own body in
/// `error.metadata.raw`) is followed by what the provider said, which is what names the
/// problem: `Provider returned error (Anthropic: A maximum of 4 blocks ...)`.
pub fn error_words(body: &str) -> String {
    let first = |text: &str| text.trim().chars().take(200).collect::<String>();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return first(body);
    };
    let Some(message) = v["error"]["message"].as_str() else {
        return first(body);
    };
    let Some(raw) = v["error"]["metadata"]["raw"].as_str() else {
        return message.to_string();
    };
    // The provider's body: its own error JSON (OpenAI's and Anthropic's `error.message`,
    // Bedrock's `message`) or plain words.
    let inner = serde_json::from_str::<serde_json::Value>(raw).ok();
    let said = inner
        .as_ref()
        .and_then(|i| i["error"]["message"].as_str().or(i["message"].as_str()))
        .map_or_else(|| first(raw), str::to_string);
    match v["error"]["metadata"]["provider_name"].as_str() {
        Some(name) => format!("{message} ({name}: {said})"),
        None => format!("{message} ({said})"),
    }
}

/// Whether `url`'s host is `localhost` or a loopback address (`127.0.0.0/8`, `::1`).
pub fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.trim().parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    // Only an address literal is parsed: a host name skips std's IP parsers, code an idle
    // agent would otherwise fault in (64 KiB) for `api.openai.com` alone.
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
    } else {
        host.eq_ignore_ascii_case("localhost")
    }
}

#[cfg(test)]
mod tests {
    use super::{error_words, is_loopback, proxy_url};

    #[test]
    fn error_words_follow_a_router_to_the_providers_own_refusal() {
        assert_eq!(
            error_words(
                r#"{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}"#
            ),
            "Incorrect API key provided"
        );
        // OpenRouter's wrapping of Anthropic's 400, as it answers it.
        let wrapped = r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"A maximum of 4 blocks with cache_control may be provided. Found 5.\"}}","provider_name":"Anthropic"}},"user_id":"user_2x"}"#;
        assert_eq!(
            error_words(wrapped),
            "Provider returned error (Anthropic: A maximum of 4 blocks with cache_control may be provided. Found 5.)"
        );
        let bedrock = r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"message\":\"messages.1.content.0.text.text: Input should be a valid string\"}","provider_name":"Amazon Bedrock"}}}"#;
        assert_eq!(
            error_words(bedrock),
            "Provider returned error (Amazon Bedrock: messages.1.content.0.text.text: Input should be a valid string)"
        );
        let words = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"z-ai/glm is temporarily rate-limited upstream."}}}"#;
        assert_eq!(
            error_words(words),
            "Provider returned error (z-ai/glm is temporarily rate-limited upstream.)"
        );
        assert_eq!(error_words("  Bad Gateway\n"), "Bad Gateway");
        assert_eq!(error_words(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn the_proxy_is_chosen_by_the_target_scheme_then_all_proxy() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| set.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        let both = env(&[("HTTPS_PROXY", "http://s:1"), ("HTTP_PROXY", "http://p:2")]);
        assert_eq!(
            proxy_url("https://api.openai.com/v1", both).as_deref(),
            Some("http://s:1")
        );
        assert_eq!(
            proxy_url("HTTPS://api.openai.com", both).as_deref(),
            Some("http://s:1")
        );
        assert_eq!(
            proxy_url("http://10.0.0.5:11434/v1", both).as_deref(),
            Some("http://p:2")
        );
        // One scheme's proxy never serves the other.
        let only_https = env(&[("https_proxy", "http://s:1")]);
        assert_eq!(proxy_url("http://10.0.0.5:11434", only_https), None);
        assert_eq!(proxy_url("https://x", only_https).as_deref(), Some("http://s:1"));
        let only_http = env(&[("HTTP_PROXY", "http://p:2")]);
        assert_eq!(proxy_url("https://api.telegram.org", only_http), None);
        // Upper case first; ALL_PROXY as the fallback; empty is unset.
        let mixed = env(&[
            ("HTTPS_PROXY", " "),
            ("https_proxy", "http://lower:3"),
            ("ALL_PROXY", "http://all:4"),
        ]);
        assert_eq!(proxy_url("https://x", mixed).as_deref(), Some("http://lower:3"));
        assert_eq!(proxy_url("http://x", mixed).as_deref(), Some("http://all:4"));
        assert_eq!(proxy_url("https://x", env(&[])), None);
    }

    #[test]
    fn loopback_hosts_are_recognised_and_others_are_not() {
        for url in [
            "http://127.0.0.1:8080/v1/tether/send",
            "http://127.9.9.9",
            "http://localhost/v1/instances",
            "https://LOCALHOST:11434",
            "http://[::1]:7777/",
            "http://[::ffff:127.0.0.1]:80",
            "http://127.0.0.1",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://api.telegram.org",
            "https://api.anthropic.com/v1",
            "http://10.0.0.1:11434",
            "http://localhost.example.com",
            "http://[::2]/",
            "http://127.0.0.1.example.com/",
            "http://1.2.3.4/",
            "http://[fe80::1]:80/",
            "not a url",
            "",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
