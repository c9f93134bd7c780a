//! Model Markdown → Telegram HTML (`parse_mode: "HTML"`).
//!
//! Telegram rejects a message whose entities do not parse, so the output must be valid by
//! construction: every character outside our tags is escaped, tags nest properly, and a
//! marker without its partner stays literal text. Supported: fenced code blocks, inline
//! code, **bold**/__bold__, *italic*/_italic_, ~~strike~~, [links](https://...), `#`
//! headings (shown bold), and tables (monospace, their columns aligned: a classic message
//! has no tables; a rich message, `render.rs`, shows them as tables).

/// Escape text for Telegram HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Convert `md`; returns `None` when the text has no formatting worth a parse mode.
pub fn to_html(md: &str) -> Option<String> {
    let mut out = String::with_capacity(md.len() + 32);
    let mut formatted = false;
    let mut lines = md.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        if !first {
            out.push('\n');
        }
        first = false;
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            // Collect until the closing fence; an unclosed fence runs to the end.
            let mut body = Vec::new();
            let mut closed = false;
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    closed = true;
                    break;
                }
                body.push(l);
            }
            let lang = lang.trim();
            let code = escape(&body.join("\n"));
            if !lang.is_empty()
                && lang
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-#_".contains(c))
            {
                out.push_str(&format!(
                    "<pre><code class=\"language-{lang}\">{code}</code></pre>"
                ));
            } else {
                out.push_str(&format!("<pre>{code}</pre>"));
            }
            formatted = true;
            let _ = closed;
            continue;
        }
        if let Some(delimiter) = lines.next_if(|next| table_starts(line, next)) {
            let mut rows = vec![line, delimiter];
            while let Some(row) = lines.next_if(|l| l.contains('|') && !l.trim().is_empty()) {
                rows.push(row);
            }
            out.push_str(&format!("<pre>{}</pre>", escape(&table(&rows))));
            formatted = true;
            continue;
        }
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            out.push_str("<b>");
            out.push_str(&inline(trimmed[hashes..].trim(), &mut formatted));
            out.push_str("</b>");
            formatted = true;
            continue;
        }
        out.push_str(&inline(line, &mut formatted));
    }
    formatted.then_some(out)
}

/// Whether `md` has a table outside its code blocks: a row of cells, then a delimiter row
/// with as many (`|---|:--:|`), as GitHub's Markdown writes one. A classic message shows
/// it as rows of pipes; a rich message as a table.
pub fn has_table(md: &str) -> bool {
    let mut in_code = false;
    let mut previous: Option<&str> = None;
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_code = !in_code;
            previous = None;
            continue;
        }
        if in_code {
            continue;
        }
        if previous.is_some_and(|row| table_starts(row, t)) {
            return true;
        }
        previous = Some(t);
    }
    false
}

/// A construct a piece of Markdown leaves open at its end, which the next message of a long
/// reply must open again to read on as written: otherwise a code block's second half shows
/// as text and its closing fence opens a block that swallows what follows, and a table's
/// rows past the cut, without their header, show as rows of pipes.
#[derive(Debug, PartialEq)]
pub enum Open<'a> {
    /// A code block, by its opening fence line (```` ```rust ````).
    Code(&'a str),
    /// A table, by its header and delimiter rows.
    Table(&'a str, &'a str),
}

/// What `md` leaves open at its end, read as [`to_html`] reads it.
pub fn open_at_end(md: &str) -> Option<Open<'_>> {
    let mut open = None;
    let mut lines = md.split('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            open = match open {
                Some(Open::Code(_)) => None,
                _ => Some(Open::Code(line.trim())),
            };
            continue;
        }
        match open {
            Some(Open::Code(_)) => {}
            Some(Open::Table(..)) if line.contains('|') && !line.trim().is_empty() => {}
            _ => {
                open = lines
                    .next_if(|next| table_starts(line, next))
                    .map(|delimiter| Open::Table(line, delimiter));
            }
        }
    }
    open
}

/// Whether a table starts with the row `row`: `next` is a delimiter row of as many cells.
fn table_starts(row: &str, next: &str) -> bool {
    row.contains('|') && delimiter_row(next.trim()) == Some(cells(row.trim()).len())
}

/// The cells of a table row, without its outer pipes.
fn cells(row: &str) -> Vec<&str> {
    let inner = row.strip_prefix('|').unwrap_or(row);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// How each column of a table is aligned, from its delimiter row (`:--`, `:-:`, `--:`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Align {
    Left,
    Center,
    Right,
}

fn alignments(delimiter: &str) -> Vec<Align> {
    cells(delimiter)
        .iter()
        .map(|c| match (c.starts_with(':'), c.ends_with(':')) {
            (true, true) => Align::Center,
            (false, true) => Align::Right,
            _ => Align::Left,
        })
        .collect()
}

/// A table's lines (header, delimiter row, rows) as monospace text, its columns padded to
/// one width and aligned as the delimiter row says, a rule under the header; the lines as
/// written when padding would make it half as long again (a cell far wider than the others
/// pads every row: more scrolling than reading).
fn table(lines: &[&str]) -> String {
    let aligns = alignments(lines[1].trim());
    let bare = |c: &str| c.replace("**", "").replace('`', "");
    let grid: Vec<Vec<String>> = [lines[0]]
        .iter()
        .chain(&lines[2..])
        .map(|r| {
            let mut cells: Vec<String> = cells(r.trim()).into_iter().map(bare).collect();
            cells.resize(aligns.len(), String::new());
            cells
        })
        .collect();
    let widths: Vec<usize> = (0..aligns.len())
        .map(|i| grid.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(&aligns)
            .map(|((c, &w), a)| {
                let room = w - c.chars().count();
                let (before, after) = match a {
                    Align::Left => (0, room),
                    Align::Right => (room, 0),
                    Align::Center => (room / 2, room - room / 2),
                };
                format!("{}{c}{}", " ".repeat(before), " ".repeat(after))
            })
            .collect();
        padded.join(" | ").trim_end().to_string()
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut text = vec![line(&grid[0]), rule.join("-+-")];
    text.extend(grid[1..].iter().map(|r| line(r)));
    let text = text.join("\n");
    let written = lines.join("\n");
    if text.chars().count() * 2 <= written.chars().count() * 3 {
        text
    } else {
        written
    }
}

/// The number of columns `t` sets, if it is a table's delimiter row.
fn delimiter_row(t: &str) -> Option<usize> {
    let cells = cells(t);
    let dashes = |c: &&str| {
        let c = c.strip_prefix(':').unwrap_or(c);
        let c = c.strip_suffix(':').unwrap_or(c);
        !c.is_empty() && c.bytes().all(|b| b == b'-')
    };
    (t.contains('|') && cells.iter().all(dashes)).then_some(cells.len())
}

/// The characters `html` (ours: tags and the four entities of [`escape`]) shows, which is
/// what Telegram's limit counts.
pub fn visible_len(html: &str) -> usize {
    let (mut n, mut in_tag, mut in_entity) = (0, false, false);
    for c in html.chars() {
        match c {
            '<' if !in_entity => in_tag = true,
            '>' if in_tag => in_tag = false,
            '&' if !in_tag => {
                in_entity = true;
                n += 1;
            }
            ';' if in_entity => in_entity = false,
            _ if in_tag || in_entity => {}
            _ => n += 1,
        }
    }
    n
}

/// Inline markup of one line.
fn inline(line: &str, formatted: &mut bool) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    // Open markers: (marker, tag, index in `out` where the tag was written).
    let mut stack: Vec<(&'static str, &'static str, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..].iter().take(2).collect();
        let c = chars[i];
        if c == '`' {
            if let Some(end) = chars[i + 1..].iter().position(|&x| x == '`') {
                let code: String = chars[i + 1..i + 1 + end].iter().collect();
                if !code.is_empty() {
                    out.push_str(&format!("<code>{}</code>", escape(&code)));
                    *formatted = true;
                    i += end + 2;
                    continue;
                }
            }
        }
        if c == '[' {
            if let Some((text, url, used)) = link(&chars[i..]) {
                out.push_str(&format!("<a href=\"{}\">{}</a>", escape(&url), escape(&text)));
                *formatted = true;
                i += used;
                continue;
            }
        }
        let marker = match (rest.as_str(), c) {
            ("**", _) => Some(("**", "b")),
            ("__", _) => Some(("__", "b")),
            ("~~", _) => Some(("~~", "s")),
            (_, '*') => Some(("*", "i")),
            (_, '_') => Some(("_", "i")),
            _ => None,
        };
        if let Some((m, tag)) = marker {
            let len = m.chars().count();
            let before = if i == 0 { ' ' } else { chars[i - 1] };
            let after = chars.get(i + len).copied().unwrap_or(' ');
            if stack.last().is_some_and(|(open, _, _)| *open == m) && !before.is_whitespace() {
                let (_, tag, _) = stack.pop().expect("checked");
                out.push_str(&format!("</{tag}>"));
                *formatted = true;
                i += len;
                continue;
            }
            // Single `_` inside a word (snake_case) is not emphasis.
            let opens = !(after.is_whitespace() || m == "_" && before.is_alphanumeric());
            if opens && !stack.iter().any(|(open, _, _)| *open == m) {
                stack.push((m, tag, out.len()));
                out.push_str(&format!("<{tag}>"));
                i += len;
                continue;
            }
        }
        out.push_str(&escape(&c.to_string()));
        i += 1;
    }
    // Unclosed markers become literal again, innermost first.
    while let Some((m, tag, at)) = stack.pop() {
        let open = format!("<{tag}>");
        out.replace_range(at..at + open.len(), m);
        // Closing tags of markers opened later were already written; they stay balanced
        // because a marker only closes the top of the stack.
    }
    out
}

/// `[text](http...)` at the start of `s`: (text, url, chars used).
fn link(s: &[char]) -> Option<(String, String, usize)> {
    let close = s.iter().position(|&c| c == ']')?;
    if s.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = s[close + 2..].iter().position(|&c| c == ')')? + close + 2;
    let text: String = s[1..close].iter().collect();
    let url: String = s[close + 2..end].iter().collect();
    let ok = (url.starts_with("http://") || url.starts_with("https://") || url.starts_with("tg://"))
        && !url.contains(char::is_whitespace)
        && !text.is_empty();
    ok.then_some((text, url, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_linked_to_itself_stays_whole_underscores_and_all() {
        // A sign-in page: base64url values may hold `_` after `=`, and `__`.
        let url = "https://auth.example/authorize?response_type=code&state=_ab_&code_challenge=__x__y";
        let html = to_html(&format!("Open:\n\n[{url}]({url})")).unwrap();
        let escaped = url.replace('&', "&amp;");
        assert_eq!(html, format!("Open:\n\n<a href=\"{escaped}\">{escaped}</a>"));
        // Bare, the same address is taken for emphasis: why the agent links it.
        assert!(to_html(url).is_some_and(|h| h.contains("<i>") || h.contains("<b>")));
    }
    use proptest::prelude::*;

    #[test]
    fn common_markdown_converts() {
        assert_eq!(
            to_html("**bold** and *it* `x<y`").unwrap(),
            "<b>bold</b> and <i>it</i> <code>x&lt;y</code>"
        );
        assert_eq!(to_html("# Title\ntext").unwrap(), "<b>Title</b>\ntext");
        assert_eq!(
            to_html("```rust\nfn a() {}\n```").unwrap(),
            "<pre><code class=\"language-rust\">fn a() {}</code></pre>"
        );
        assert_eq!(
            to_html("see [docs](https://x.y/a?b=1&c=2)").unwrap(),
            "see <a href=\"https://x.y/a?b=1&amp;c=2\">docs</a>"
        );
    }

    #[test]
    fn what_a_piece_leaves_open_at_its_end() {
        assert_eq!(open_at_end("text\n```rust\nfn a()"), Some(Open::Code("```rust")));
        assert_eq!(open_at_end("```\na\n```\nafter"), None);
        let table = "| a | b |\n|---|---|\n| 1 | 2 |";
        assert_eq!(open_at_end(table), Some(Open::Table("| a | b |", "|---|---|")));
        assert_eq!(open_at_end(&format!("{table}\n\nafter")), None);
        assert_eq!(open_at_end(&format!("```\n{table}")), Some(Open::Code("```")));
        assert_eq!(open_at_end(&format!("```\n{table}\n```")), None);
    }

    #[test]
    fn plain_or_broken_markdown_stays_literal() {
        assert_eq!(to_html("just text, 3 < 4"), None);
        assert_eq!(to_html("a snake_case_name"), None);
        assert_eq!(to_html("2 * 3 * 4"), None);
        assert_eq!(to_html("**unclosed bold").as_deref(), None);
        assert_eq!(to_html("**a** and **b").unwrap(), "<b>a</b> and **b");
    }

    #[test]
    fn a_table_is_monospace_with_its_columns_aligned() {
        let md = "Plans:\n\n| Plan | **Price** | Note |\n|:--|--:|:-:|\n| Free | 0 | x |\n| Pro `x` | 20 |\nAfter.";
        assert_eq!(
            to_html(md).unwrap(),
            "Plans:\n\n<pre>Plan  | Price | Note\n------+-------+-----\nFree  |     0 |  x\nPro x |    20 |</pre>\nAfter."
        );
        // Escaped, and a row that does not fit the header is still the table's.
        assert_eq!(
            to_html("a | b\n--- | ---\n<x> | &").unwrap(),
            "<pre>a   | b\n----+--\n&lt;x&gt; | &amp;</pre>"
        );
        // Padding that would lengthen it: the rows as written.
        let wide = format!(
            "| a | b |\n|---|---|\n| {} | c |\n| d | {} |",
            "x".repeat(40),
            "y".repeat(40)
        );
        assert_eq!(to_html(&wide).unwrap(), format!("<pre>{wide}</pre>"));
    }

    #[test]
    fn what_html_shows_is_counted_as_telegram_counts_it() {
        assert_eq!(visible_len("<b>a&amp;b</b> &lt;c&gt;"), 7);
        assert_eq!(
            visible_len("<pre><code class=\"language-rust\">x</code></pre>"),
            1
        );
        assert_eq!(visible_len("plain"), 5);
    }

    #[test]
    fn tables_are_found_outside_code_only() {
        let table = "Prices:\n\n| Plan | $/month |\n|------|--:|\n| Pro | 20 |";
        assert!(has_table(table));
        assert!(has_table("a | b\n--- | :---:\n1 | 2"), "without outer pipes");
        assert!(has_table("| one |\n|---|\n| 1 |"), "one column");
        assert!(!has_table("```\n| a | b |\n|---|---|\n```"), "in a code block");
        assert!(!has_table("| a | b |\n|---|"), "columns differ");
        assert!(!has_table("a | b\n\n|---|---|"), "rows apart");
        assert!(
            !has_table("total\n---\nx | y"),
            "a heading underline is not a table"
        );
        assert!(!has_table("x || y\n- item\n| - |"));
        assert!(!has_table(""));
    }

    /// Tags our converter writes nest properly and nothing else looks like a tag.
    fn well_formed(html: &str) -> bool {
        let mut stack = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            let Some(j) = rest[i..].find('>') else {
                return false;
            };
            let tag = &rest[i + 1..i + j];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.to_string()) {
                    return false;
                }
            } else {
                let name = tag.split(' ').next().unwrap_or("");
                if !["b", "i", "s", "code", "pre", "a"].contains(&name) {
                    return false;
                }
                stack.push(name.to_string());
            }
            rest = &rest[i + j + 1..];
        }
        stack.is_empty()
    }

    proptest! {
        #[test]
        fn any_rows_under_a_delimiter_row_are_a_table(
            head in proptest::collection::vec("[a-zA-Z0-9$*_`.][a-zA-Z0-9 $*_`.-]{0,11}", 1..8),
            align in proptest::collection::vec(0u8..4, 8),
            before in "[a-z .,\n]{0,40}",
            outer in any::<bool>(),
        ) {
            let row = |cells: Vec<String>| match outer {
                true => format!("| {} |", cells.join(" | ")),
                false if cells.len() == 1 => format!("| {} |", cells[0]),
                false => cells.join(" | "),
            };
            let delimiter: Vec<String> = (0..head.len())
                .map(|i| ["---", ":--", "--:", ":-:"][align[i] as usize].to_string())
                .collect();
            let head: Vec<String> = head.iter().map(|c| c.replace('|', "")).collect();
            let md = format!("{before}\n{}\n{}\n| x |", row(head.clone()), row(delimiter));
            prop_assert!(has_table(&md), "{md:?}");
            // The same lines in a code block are code.
            let fenced = format!("```\n{md}\n```");
            prop_assert!(!has_table(&fenced), "{fenced:?}");
        }

        #[test]
        fn markup_without_tables_never_lengthens_what_shows(s in "[a-z *_`~\\[\\]()#<>&\n]{0,80}") {
            if let Some(h) = to_html(&s) {
                prop_assert!(visible_len(&h) <= s.chars().count(), "{s:?} -> {h:?}");
            }
        }

        #[test]
        fn text_without_pipes_has_no_table(s in "[a-z :\n`#*-]{0,80}") {
            prop_assert!(!has_table(&s));
        }

        #[test]
        fn output_is_always_valid_telegram_html(s in "[a-z *_`~\\[\\]()#<>&\n]{0,60}") {
            if let Some(h) = to_html(&s) {
                prop_assert!(well_formed(&h), "{s:?} -> {h:?}");
            }
        }
    }
}
