//! The `web_fetch` tool: one HTTP(S) GET, the body reduced to readable text.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use super::{arg_str, cap_text, Abandoned};

/// Characters of text returned.
pub const TEXT_CAP: usize = 10_000;
/// Bytes of body downloaded at most.
const BODY_CAP: u64 = 2 * 1024 * 1024;

/// `web_fetch {url}`; its connection closes when the call is `abandoned`.
pub fn fetch(args: &Value, abandoned: &Abandoned) -> Result<String, String> {
    let url = arg_str(args, "url")?.trim();
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("only http:// and https:// URLs can be fetched".into());
    }
    let agent: ureq::Agent = tether::http::agent_config(url)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(30)))
        .max_redirects(5)
        .user_agent(concat!("aegis-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let _armed = abandoned.arm(&agent)?;
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(BODY_CAP)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading {url} failed: {e}"))?;
    let textual = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("javascript");
    if !textual || body[..body.len().min(8192)].contains(&0) {
        return Err(format!(
            "{url} is not text ({content_type}, {} bytes)",
            body.len()
        ));
    }
    let raw = String::from_utf8_lossy(&body);
    let text = if content_type.contains("html") || raw.trim_start().starts_with('<') && raw.contains("<html")
    {
        html_to_text(&raw)
    } else {
        raw.into_owned()
    };
    let n = text.len();
    let text = cap_text(text, TEXT_CAP, n);
    if status >= 400 {
        return Err(format!("HTTP {status} from {url}\n{text}"));
    }
    Ok(text)
}

/// Readable text of an HTML page: scripts, styles and tags gone, block elements on lines
/// of their own, entities decoded, runs of blank space folded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 3);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = rest[1..gt].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        rest = &rest[gt + 1..];
        if matches!(
            name.as_str(),
            "script" | "style" | "noscript" | "svg" | "template"
        ) && !rest.is_empty()
        {
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = match lower.find(&close) {
                Some(at) => rest[at..].find('>').map_or("", |e| &rest[at + e + 1..]),
                None => "",
            };
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p"
                | "div"
                | "li"
                | "tr"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "h5"
                | "h6"
                | "section"
                | "article"
                | "header"
                | "footer"
                | "pre"
                | "blockquote"
                | "table"
                | "ul"
                | "ol"
                | "title"
        ) {
            out.push('\n');
        }
    }
    out.push_str(&decode_entities(rest));
    fold_space(&out)
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // `;` is ASCII, so its byte position is a character boundary.
        let end = rest.as_bytes()[..rest.len().min(12)]
            .iter()
            .position(|&b| b == b';');
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                n if n.starts_with("#x") || n.starts_with("#X") => {
                    u32::from_str_radix(&n[2..], 16).ok().and_then(char::from_u32)
                }
                n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn fold_space(s: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in s.lines() {
        let folded = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if !folded.is_empty() {
            lines.push(folded);
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><title>T</title><style>p{color:red}</style><script>var x='<p>';</script></head>\
            <body><h1>Hello &amp; welcome</h1><p>One&nbsp;two <b>three</b></p><!-- hidden --><ul><li>a</li><li>b &#x263A;</li></ul></body></html>";
        assert_eq!(html_to_text(html), "T\nHello & welcome\nOne two three\na\nb ☺");
    }

    proptest! {
        #[test]
        fn html_to_text_never_panics_and_drops_tags(s in ".{0,400}") {
            let text = html_to_text(&s);
            prop_assert!(text.len() <= s.len() * 4 + 16);
        }
    }
}
