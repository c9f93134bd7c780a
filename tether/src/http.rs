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
/// the proxy `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` name, minus `NO_PROXY`, except for a
/// loopback target.
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
    let builder = ureq::Agent::config_builder()
        .input_buffer_size(INPUT_BUFFER)
        .output_buffer_size(OUTPUT_BUFFER)
        .max_response_header_size(INPUT_BUFFER);
    let builder = if is_loopback(target) {
        builder.proxy(None)
    } else {
        builder
    };
    #[cfg(feature = "tls")]
    let builder = crate::trust::configure(builder);
    builder
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
    use super::is_loopback;

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
