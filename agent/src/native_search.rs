//! [ours] Web search by the model's provider, run inside the model's turn (no Brave Search
//! key needed; the provider bills each search): Anthropic's web search tool, and the
//! `web_search` tool of OpenAI's Responses API. This module is the wire's detail: the
//! tools as offered, which blocks or items are the searches the provider ran and how they
//! go back, the input of Anthropic's calls, and the answer's citations turned into a list
//! of sources under the answer (with numbered marks for Anthropic's), as both ask of an
//! answer shown to people.

use serde_json::{json, Value};

/// Searches per request unless agent.json says otherwise (`max_uses`).
pub const DEFAULT_MAX_USES: u32 = 5;
/// Most searches per request agent.json can allow.
pub const MAX_USES: u32 = 20;
/// Longest title listed, in characters.
const MAX_TITLE: usize = 100;
/// Most sources listed under one answer.
const MAX_SOURCES: usize = 20;

/// The provider's search as agent.json sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSearch {
    /// Searches per request at most.
    pub max_uses: u32,
    /// Where it looks, and from where.
    pub scope: crate::search_scope::SearchScope,
}

#[cfg(test)]
impl NativeSearch {
    /// A search of `max_uses` a request, anywhere.
    pub fn anywhere(max_uses: u32) -> NativeSearch {
        NativeSearch {
            max_uses,
            scope: Default::default(),
        }
    }
}

/// The tool as the Messages API takes it.
pub fn anthropic_tool(search: &NativeSearch) -> Value {
    search
        .scope
        .anthropic(json!({"type": "web_search_20250305", "name": "web_search", "max_uses": search.max_uses}))
}

/// OpenAI's tool as a request offers it (the Responses API's; the request's
/// `max_tool_calls` bounds its searches).
pub fn openai_tool(search: &NativeSearch) -> Value {
    search.scope.openai(json!({"type": "web_search"}))
}

/// `body` without the provider's web search, when `refusal` (a 400 or 403's words) is
/// about it: an organization whose admin has not allowed web search, or a model that
/// cannot search ("Hosted tool 'web_search' is not supported with gpt-4.1-nano"), is
/// refused every request that offers it, and the model is better off answering without.
pub fn without_it(body: &Value, refusal: &str) -> Option<Value> {
    let words = refusal.to_ascii_lowercase();
    if !words.contains("web search") && !words.contains("web_search") {
        return None;
    }
    let mut plain = body.clone();
    let tools = plain.get_mut("tools")?.as_array_mut()?;
    let before = tools.len();
    // Brave's tool is a `function`: only the provider's own are typed `web_search...`.
    tools.retain(|t| !t["type"].as_str().is_some_and(|t| t.starts_with("web_search")));
    if tools.len() == before {
        return None;
    }
    let none_left = tools.is_empty();
    let fields = plain.as_object_mut()?;
    if none_left {
        fields.remove("tools");
    }
    fields.remove("max_tool_calls");
    Some(plain)
}

/// A search OpenAI ran (a `web_search_call` output item) as it goes back in the input of
/// the reply's next rounds: what it did (`action`), without its id, which a request that
/// is not stored cannot refer to (OpenAI's own stateless client, Codex, sends none
/// either), nor the sources a request may have asked listed. `None` for an item that
/// does not say what it did (the API wants the action back).
pub fn openai_call(item: &Value) -> Option<Value> {
    let mut action = item["action"].as_object()?.clone();
    action.remove("sources");
    let status = item["status"].as_str().unwrap_or("completed");
    Some(json!({"type": "web_search_call", "status": status, "action": action}))
}

/// Whether a `web_search_call` searched (OpenAI bills searches; its other actions open a
/// page it found, or look for words in one).
pub fn openai_searched(item: &Value) -> bool {
    item["action"]["type"].as_str().is_none_or(|t| t == "search")
}

/// Whether `block` (a response's content block) is the result of a tool Anthropic ran
/// (`web_search_tool_result`, and the like of its other server tools).
pub fn is_server_result(block: &Value) -> bool {
    block["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("_tool_result"))
        && block.get("tool_use_id").is_some()
}

/// Say in the log what a search found, or why it failed (the model is told by the API
/// itself, and carries on).
pub fn log_result(block: &Value) {
    let what = block["type"].as_str().unwrap_or("server tool result");
    match &block["content"] {
        Value::Array(results) => log::info!("{what}: {} results", results.len()),
        content => log::warn!(
            "{what}: failed ({})",
            content["error_code"].as_str().unwrap_or("no error code")
        ),
    }
}

/// The input of a server tool call from its pieces: an object, else `{}` (a call the
/// API ran whatever we read of it).
pub fn input_of(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() || tether::depth::check(text.as_bytes()).is_err() {
        return json!({});
    }
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// The number of the source `citation` names (1, 2, ...), adding it to `sources` when
/// new; `None` for a citation without a web address, or past [`MAX_SOURCES`].
pub fn source_number(sources: &mut Vec<(String, String)>, citation: &Value) -> Option<usize> {
    let url = citation["url"]
        .as_str()
        .filter(|u| crate::oauth_discovery::is_http_url(u))?;
    if let Some(i) = sources.iter().position(|(u, _)| u == url) {
        return Some(i + 1);
    }
    if sources.len() == MAX_SOURCES {
        return None;
    }
    let title = citation["title"].as_str().unwrap_or_default();
    sources.push((url.to_string(), title.to_string()));
    Some(sources.len())
}

/// The marks a cited passage ends with: `[1][3]`.
pub fn marks(numbers: &[usize]) -> String {
    numbers.iter().map(|n| format!("[{n}]")).collect()
}

/// The sources under an answer, one Markdown link a line, numbered as marked.
pub fn listing(sources: &[(String, String)]) -> String {
    let mut out = String::from("\n\nSources:");
    for (i, (url, title)) in sources.iter().enumerate() {
        let url = link_target(url);
        let mut title = title_text(title);
        if title.is_empty() {
            title = crate::elicit::host_of(&url).unwrap_or_default();
        }
        if title.is_empty() {
            title = title_text(&url);
        }
        out.push_str(&format!("\n{}. [{title}]({url})", i + 1));
    }
    out
}

/// A title as a link's text: one line, no brackets that would end it, clipped.
fn title_text(title: &str) -> String {
    let plain: String = title
        .chars()
        .map(|c| match c {
            '[' => '(',
            ']' => ')',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    crate::text::clip(
        plain.split_whitespace().collect::<Vec<_>>().join(" ").as_str(),
        MAX_TITLE,
    )
}

/// An address as a link's target: what would end it or break the line escaped.
fn link_target(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            ' ' | '(' | ')' | '<' | '>' | '[' | ']' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn citations_are_numbered_once_per_address_and_listed_as_links() {
        let mut sources = Vec::new();
        let cite = |url: &str, title: &str| json!({"type": "web_search_result_location", "url": url, "title": title});
        assert_eq!(
            source_number(&mut sources, &cite("https://a.example/x", "A [news]")),
            Some(1)
        );
        assert_eq!(
            source_number(&mut sources, &cite("https://b.example/(y) z", "")),
            Some(2)
        );
        assert_eq!(
            source_number(&mut sources, &cite("https://a.example/x", "again")),
            Some(1)
        );
        assert_eq!(
            source_number(&mut sources, &cite("javascript:alert(1)", "no")),
            None
        );
        assert_eq!(
            source_number(&mut sources, &json!({"type": "char_location"})),
            None
        );
        assert_eq!(marks(&[1, 2]), "[1][2]");
        assert_eq!(
            listing(&sources),
            "\n\nSources:\n1. [A (news)](https://a.example/x)\n2. [b.example](https://b.example/%28y%29%20z)"
        );
        for n in 3..=MAX_SOURCES {
            let url = format!("https://s.example/{n}");
            assert_eq!(source_number(&mut sources, &cite(&url, "t")), Some(n));
        }
        assert_eq!(
            source_number(&mut sources, &cite("https://over.example", "t")),
            None
        );
    }

    #[test]
    fn server_results_and_inputs_are_read_as_the_api_gives_them() {
        let result = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []});
        assert!(is_server_result(&result));
        assert!(!is_server_result(&json!({"type": "tool_result", "content": "x"})));
        assert!(!is_server_result(&json!({"type": "text", "text": "x"})));
        assert_eq!(input_of(r#"{"query": "rust"}"#), json!({"query": "rust"}));
        for broken in ["", "{\"query\": ", "[1]", &"[".repeat(200)] {
            assert_eq!(input_of(broken), json!({}), "{broken}");
        }
    }

    #[test]
    fn a_refusal_of_the_search_drops_it_and_nothing_else() {
        let body =
            json!({"model": "m", "tools": [{"name": "bash"}, anthropic_tool(&NativeSearch::anywhere(5))]});
        let refusal = "HTTP 400: Web search is not enabled for this organization";
        assert_eq!(
            without_it(&body, refusal),
            Some(json!({"model": "m", "tools": [{"name": "bash"}]}))
        );
        let alone = json!({"model": "m", "tools": [anthropic_tool(&NativeSearch::anywhere(5))]});
        assert_eq!(without_it(&alone, refusal), Some(json!({"model": "m"})));
        assert_eq!(without_it(&body, "HTTP 400: max_tokens: too large"), None);
        let searchless = json!({"model": "m", "tools": [{"name": "bash"}]});
        assert_eq!(without_it(&searchless, refusal), None, "nothing to drop");
    }

    #[test]
    fn openais_search_goes_back_by_what_it_did_not_by_its_id() {
        let item = json!({"id": "ws_9", "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": "q", "sources": [{"type": "url", "url": "https://a.example"}]}});
        assert_eq!(
            openai_call(&item),
            Some(json!({"type": "web_search_call", "status": "completed",
                "action": {"type": "search", "query": "q"}}))
        );
        assert!(openai_searched(&item));
        let opened =
            json!({"type": "web_search_call", "action": {"type": "open_page", "url": "https://a.example"}});
        assert!(!openai_searched(&opened));
        assert_eq!(openai_call(&opened).unwrap()["status"], "completed");
        assert_eq!(
            openai_call(&json!({"id": "ws_1", "type": "web_search_call", "status": "failed"})),
            None
        );
    }

    #[test]
    fn a_refusal_of_openais_search_drops_it_and_its_limit() {
        let body = json!({"model": "gpt-4.1-nano", "max_tool_calls": 5,
            "tools": [{"type": "function", "function": {"name": "web_search"}}, openai_tool(&NativeSearch::anywhere(5))]});
        let refusal = "HTTP 400: Hosted tool 'web_search' is not supported with gpt-4.1-nano.";
        assert_eq!(
            without_it(&body, refusal),
            Some(json!({"model": "gpt-4.1-nano",
                "tools": [{"type": "function", "function": {"name": "web_search"}}]})),
            "a function of that name is not the provider's"
        );
    }

    proptest! {
        /// Whatever a search result is called or where it is, each source stays one line
        /// and one link.
        #[test]
        fn any_source_is_one_line_and_one_link(url in "https?://\\PC{0,40}", title in "\\PC{0,150}") {
            let listed = listing(&[(url, title)]);
            let lines: Vec<&str> = listed.lines().collect();
            prop_assert_eq!(&lines[..3], ["", "", "Sources:"]);
            prop_assert_eq!(lines.len(), 4);
            let line = lines[3];
            prop_assert!(!line.starts_with("1. []"), "{}", line);
            prop_assert!(line.starts_with("1. ["));
            prop_assert_eq!(line.matches("](").count(), 1, "{}", line);
            prop_assert!(line.ends_with(')'));
            let target = &line[line.find("](").unwrap() + 2..line.len() - 1];
            prop_assert!(!target.contains([' ', '(', ')']), "{}", target);
        }
    }
}
