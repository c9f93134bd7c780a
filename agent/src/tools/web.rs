//! The `web_fetch` tool: one HTTP(S) GET, the body reduced to readable text; [ours] a
//! PDF or an image (a paper's link, a picture's) shown to the model as `read_file` shows
//! one of the workspace, where its server takes them.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::files::Visual;
use super::reach::Reach;
use super::{arg_str, cap_text, Abandoned};

/// Characters of text returned.
pub const TEXT_CAP: usize = 10_000;
/// Bytes of body downloaded at most.
const BODY_CAP: u64 = 2 * 1024 * 1024;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// A PDF or an image `web_fetch` got, for the model to be shown.
#[derive(Debug)]
pub struct Got {
    /// What it is.
    pub kind: Visual,
    /// Its name, from the URL (`2401.12345.pdf`).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// `web_fetch {url}`, reaching only what `reach` allows; its connection closes when the
/// call is `abandoned`. A PDF or an image the model is shown (`shows` says which) comes
/// back whole, with the text that names it.
pub fn fetch(
    args: &Value,
    abandoned: &Abandoned,
    reach: &Arc<Reach>,
    shows: impl Fn(Visual) -> bool,
) -> Result<(String, Option<Got>), String> {
    let first = arg_str(args, "url")?.trim();
    let mut url = first.to_string();
    let mut hops = 0;
    let resp = loop {
        let resp = get(&url, abandoned, reach)?;
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok());
        match (resp.status().as_u16(), location) {
            (301 | 302 | 303 | 307 | 308, Some(to)) if hops < MAX_REDIRECTS => {
                url = joined(&url, to)
                    .ok_or_else(|| format!("{url} redirects to {to:?}, which is not an http(s) URL"))?;
                hops += 1;
            }
            (301 | 302 | 303 | 307 | 308, Some(_)) => {
                return Err(format!(
                    "cannot fetch {first}: more than {MAX_REDIRECTS} redirects"
                ))
            }
            _ => break resp,
        }
    };
    let url = url.as_str();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let textual = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("javascript");
    // Anything else may be a PDF or an image (also one served as a download): read as
    // far as the larger of them may go, and know it by its first bytes.
    let cap = if textual { BODY_CAP } else { Visual::Pdf.cap() + 1 };
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(cap)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading {url} failed: {e}"))?;
    if let Some(kind) = Visual::of(&body).filter(|_| !textual) {
        return visual(url, status, kind, body, &shows).map(|(text, got)| (text, Some(got)));
    }
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
    Ok((text, None))
}

/// The `kind` file `url` answered with `body`: shown to the model when `shows` says and
/// it is not too large.
fn visual(
    url: &str,
    status: u16,
    kind: Visual,
    body: Vec<u8>,
    shows: &impl Fn(Visual) -> bool,
) -> Result<(String, Got), String> {
    let what = kind.described();
    if status >= 400 {
        return Err(format!("HTTP {status} from {url} ({what})"));
    }
    let save = "download it into the workspace with bash (curl -o) to work on it with a command";
    if !shows(kind) {
        return Err(format!(
            "{url} is {what}, which this model's server is not sent (see read_file); {save}"
        ));
    }
    if body.len() as u64 > kind.cap() {
        return Err(format!(
            "{url} is {what} larger than {} MB, too large to show you; {save}",
            kind.cap() >> 20
        ));
    }
    let name = name_of(url, kind);
    let text = kind.attached_note(url, body.len() as u64);
    Ok((
        text,
        Got {
            kind,
            name,
            bytes: body,
        },
    ))
}

/// A file name for what `url` served: its path's last part, with the extension of its
/// kind when it has none (arXiv's `/pdf/2401.12345` is `2401.12345.pdf`).
fn name_of(url: &str, kind: Visual) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.split_once("://").map_or(path, |(_, rest)| rest);
    let last = after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download");
    let ext = match kind {
        Visual::Pdf => "pdf",
        Visual::Image(t) => crate::blobs::extension(t),
    };
    let lower = last.to_ascii_lowercase();
    let has_ext = lower.ends_with(&format!(".{ext}")) || (ext == "jpg" && lower.ends_with(".jpeg"));
    let name: String = last.chars().take(100).collect();
    if has_ext {
        name
    } else {
        format!("{name}.{ext}")
    }
}

/// One GET of `url`, redirects not followed, through a client (and a proxy, chosen for
/// this URL) that reaches only what `reach` allows.
fn get(
    url: &str,
    abandoned: &Abandoned,
    reach: &Arc<Reach>,
) -> Result<ureq::http::Response<ureq::Body>, String> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("only http:// and https:// URLs can be fetched".into());
    }
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{url} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or("");
    let config = tether::http::agent_config(url)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(30)))
        .max_redirects(0)
        .user_agent(concat!("aegis-agent/", env!("CARGO_PKG_VERSION")))
        .build();
    let proxy = config.proxy().filter(|p| !p.is_no_proxy(&uri));
    if proxy.is_some() {
        let port = uri
            .port_u16()
            .unwrap_or(if lower.starts_with("https") { 443 } else { 80 });
        reach.check_proxied(host, port)?;
    }
    let resolver = reach.resolver(proxy.map(|p| (p.host().to_string(), p.port())));
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        resolver,
    );
    let _armed = abandoned.arm(&agent)?;
    agent.get(url).call().map_err(|e| match e {
        // The resolver's refusal says it all.
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => e.to_string(),
        e => format!("cannot fetch {url}: {e}"),
    })
}

/// Where a redirect's `location` leads from `base`: an absolute http(s) URL, one of the
/// same scheme (`//host/...`), a path on the same host, or one relative to `base`'s.
fn joined(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(location.to_string());
    }
    if lower.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    }) {
        return None;
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(net) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{net}"));
    }
    let path_at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(path_at);
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = if location.starts_with('?') {
        path
    } else {
        path.rsplit_once('/').map_or("/", |(dir, _)| dir)
    };
    let sep = if location.starts_with('?') || dir.ends_with('/') {
        ""
    } else {
        "/"
    };
    let dir = if dir.is_empty() && !location.starts_with('?') {
        ""
    } else {
        dir
    };
    Some(format!("{scheme}://{authority}{dir}{sep}{location}"))
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
    fn a_redirect_leads_where_a_browser_would_go() {
        let base = "http://a.example/docs/guide/page?x=1#top";
        let cases = [
            ("https://b.example/x", Some("https://b.example/x")),
            ("//c.example/y", Some("http://c.example/y")),
            ("/root", Some("http://a.example/root")),
            ("next", Some("http://a.example/docs/guide/next")),
            ("?y=2", Some("http://a.example/docs/guide/page?y=2")),
            ("file:///etc/passwd", None),
            ("gopher://a.example/", None),
        ];
        for (location, want) in cases {
            assert_eq!(joined(base, location).as_deref(), want, "{location}");
        }
        assert_eq!(
            joined("http://a.example", "next").as_deref(),
            Some("http://a.example/next")
        );
        assert_eq!(
            joined("http://a.example/", "next").as_deref(),
            Some("http://a.example/next")
        );
    }

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><title>T</title><style>p{color:red}</style><script>var x='<p>';</script></head>\
            <body><h1>Hello &amp; welcome</h1><p>One&nbsp;two <b>three</b></p><!-- hidden --><ul><li>a</li><li>b &#x263A;</li></ul></body></html>";
        assert_eq!(html_to_text(html), "T\nHello & welcome\nOne two three\na\nb ☺");
    }

    #[test]
    fn a_fetched_file_is_named_from_its_url() {
        for (url, kind, name) in [
            ("https://arxiv.org/pdf/2401.12345", Visual::Pdf, "2401.12345.pdf"),
            (
                "https://arxiv.org/pdf/2401.12345v2/",
                Visual::Pdf,
                "2401.12345v2.pdf",
            ),
            ("https://x.example/Report.PDF?dl=1#p2", Visual::Pdf, "Report.PDF"),
            ("https://x.example", Visual::Pdf, "x.example.pdf"),
            (
                "https://x.example/a/photo.jpeg",
                Visual::Image("image/jpeg"),
                "photo.jpeg",
            ),
            ("https://x.example/plot", Visual::Image("image/png"), "plot.png"),
        ] {
            assert_eq!(name_of(url, kind), name, "{url}");
        }
    }

    proptest! {
        #[test]
        fn any_url_names_a_file_without_a_slash(url in "\\PC{0,200}") {
            let name = name_of(&url, Visual::Pdf);
            prop_assert!(!name.is_empty() && !name.contains('/'), "{url:?} -> {name:?}");
            prop_assert!(name.to_ascii_lowercase().ends_with(".pdf"), "{url:?} -> {name:?}");
        }

        #[test]
        fn html_to_text_never_panics_and_drops_tags(s in ".{0,400}") {
            let text = html_to_text(&s);
            prop_assert!(text.len() <= s.len() * 4 + 16);
        }
    }
}
