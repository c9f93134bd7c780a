//! YAML front matter (`---` lines around `key: value` lines at the top of a Markdown
//! file), read for its top-level text fields only: what a SKILL.md's `name`,
//! `description` and flags need.
//!
//! Not a YAML parser, on purpose: skills written for other agents often carry what
//! strict YAML refuses (`description: Use when: the user sends a PDF`, an unquoted colon),
//! and the Agent Skills guide for clients asks to read those anyway. Plain, quoted
//! (`"..."` with escapes, `'...'`) and block (`|`, `>`) scalars are read, over several
//! lines too; a nested map or list (`metadata:`) is skipped, as is any line this reader
//! does not understand. Values come trimmed.

use std::collections::BTreeMap;

/// The top-level text fields of `text`'s front matter, and the body after it (trimmed);
/// `None` when `text` does not start with front matter.
pub fn split(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    if lines.next()?.trim_end() != "---" {
        return None;
    }
    let mut block = Vec::new();
    let mut at = text.find('\n')? + 1;
    for line in lines {
        at += line.len();
        let bare = line.trim_end();
        if bare == "---" || bare == "..." {
            return Some((fields(&block), text[at..].trim()));
        }
        block.push(line.trim_end_matches(['\n', '\r']));
    }
    None
}

/// `key: value` lines at the top level, each with the indented lines that continue it.
fn fields(lines: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.trim().is_empty() || line.starts_with([' ', '\t', '#']) {
            continue;
        }
        let start = i;
        while i < lines.len() && (lines[i].trim().is_empty() || lines[i].starts_with([' ', '\t'])) {
            i += 1;
        }
        let Some((key, rest)) = key_value(line) else {
            continue;
        };
        if let Some(value) = scalar(rest, &lines[start..i]) {
            out.insert(key.to_string(), value);
        }
    }
    out
}

/// `key` and what follows its colon, for a line `key: rest` (or `key:`).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let colon = line
        .char_indices()
        .find(|&(i, c)| c == ':' && line[i + 1..].chars().next().is_none_or(|n| n == ' ' || n == '\t'))?
        .0;
    let key = line[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then(|| (key, line[colon + 1..].trim()))
}

/// The value that starts with `rest` and goes on over `more` (indented or blank lines);
/// `None` for a nested map or list.
fn scalar(rest: &str, more: &[&str]) -> Option<String> {
    match rest.chars().next() {
        Some('|' | '>') if block_header(rest) => Some(block(rest.starts_with('|'), more)),
        Some('"') => Some(quoted(&joined(rest, more), '"')),
        Some('\'') => Some(quoted(&joined(rest, more), '\'')),
        None => {
            let first = more.iter().map(|l| l.trim()).find(|l| !l.is_empty());
            match first {
                None => Some(String::new()),
                Some(l) if l.starts_with("- ") || l == "-" || key_value(l).is_some() => None,
                Some(_) => Some(fold(more.iter().map(|l| l.trim()))),
            }
        }
        Some(_) => {
            let first = plain_line(rest);
            Some(fold(
                std::iter::once(first).chain(more.iter().map(|l| plain_line(l.trim()))),
            ))
        }
    }
}

/// Whether `rest` is a block scalar's header: `|` or `>`, then chomping and indentation
/// indicators (`|-`, `>+2`), then at most a comment.
fn block_header(rest: &str) -> bool {
    let head = rest.split(" #").next().unwrap_or("").trim();
    head[1..].chars().all(|c| matches!(c, '-' | '+' | '1'..='9'))
}

/// A block scalar's lines, their common indentation removed: kept as lines (`|`) or
/// folded into one (`>`, a blank line standing for a line break).
fn block(literal: bool, lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let lines = lines.iter().map(|l| l.get(indent..).unwrap_or("").trim_end());
    if literal {
        lines.collect::<Vec<_>>().join("\n").trim().to_string()
    } else {
        fold(lines)
    }
}

/// Lines joined by spaces; a blank line is a line break.
fn fold<'l>(lines: impl Iterator<Item = &'l str>) -> String {
    let mut out = String::new();
    let mut breaks = 0;
    for line in lines {
        if line.is_empty() {
            breaks += 1;
            continue;
        }
        if !out.is_empty() {
            if breaks == 0 {
                out.push(' ');
            } else {
                out.extend(std::iter::repeat_n('\n', breaks));
            }
        }
        breaks = 0;
        out.push_str(line);
    }
    out
}

/// A plain scalar's line without its comment (` #` starts one).
fn plain_line(line: &str) -> &str {
    line.find(" #").map_or(line, |at| &line[..at]).trim()
}

/// A quoted scalar's text over its lines: each line break and the indentation after it
/// fold into a space, a blank line into a line break.
fn joined(rest: &str, more: &[&str]) -> String {
    fold(std::iter::once(rest).chain(more.iter().map(|l| l.trim())))
}

/// The text between `q` and its closing quote (to the end when unclosed): `''` stands
/// for `'` in single quotes; backslash escapes in double quotes.
fn quoted(text: &str, q: char) -> String {
    let mut out = String::new();
    let mut chars = text[1..].chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if q == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    break;
                }
            }
            '"' if q == '"' => break,
            '\\' if q == '"' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some(c @ ('x' | 'u' | 'U')) => {
                    let len = match c {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = chars.by_ref().take(len).collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(ch) => out.push(ch),
                        None => out.push(char::REPLACEMENT_CHARACTER),
                    }
                }
                // `\"`, `\\`, `\/`, `\ ` and the rest stand for themselves.
                Some(other) => out.push(other),
                None => {}
            },
            _ => out.push(c),
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(text: &str, key: &str) -> Option<String> {
        split(text).and_then(|(f, _)| f.get(key).cloned())
    }

    #[test]
    fn the_fields_and_the_body_are_split() {
        let text = "---\nname: pdf-processing\ndescription: Extract text from PDFs. Use when: the user sends a PDF # not part\nlicense: Apache-2.0\nmetadata:\n  author: example\n  version: \"1.0\"\nallowed-tools: Bash(git:*) Read\n---\n\n# PDF\n\nSteps.\n";
        let (fields, body) = split(text).unwrap();
        assert_eq!(fields["name"], "pdf-processing");
        assert_eq!(
            fields["description"],
            "Extract text from PDFs. Use when: the user sends a PDF"
        );
        assert_eq!(fields["allowed-tools"], "Bash(git:*) Read");
        assert!(!fields.contains_key("metadata"), "a nested map is no text");
        assert!(!fields.contains_key("author"), "nor are its keys top-level");
        assert_eq!(body, "# PDF\n\nSteps.");
    }

    #[test]
    fn quoted_and_block_values_over_several_lines() {
        let f = |value: &str| {
            field(
                &format!("---\ndescription: {value}\nname: x\n---\n"),
                "description",
            )
        };
        assert_eq!(
            f("\"Say \\\"hi\\\"\\n\\u00e9 \\\\ done\"").unwrap(),
            "Say \"hi\"\né \\ done"
        );
        assert_eq!(f("'It''s: fine'").unwrap(), "It's: fine");
        assert_eq!(
            f(">\n  Extract text\n  from PDFs.\n\n  Then stop.").unwrap(),
            "Extract text from PDFs.\nThen stop."
        );
        assert_eq!(
            f("|-\n    line one\n      indented\n    line three").unwrap(),
            "line one\n  indented\nline three"
        );
        assert_eq!(f("\"one\n  two\"").unwrap(), "one two");
        assert_eq!(f("plain words\n  go on here").unwrap(), "plain words go on here");
        assert_eq!(f("").unwrap(), "");
        assert_eq!(f("\n  - a\n  - b"), None, "a list");
    }

    #[test]
    fn text_without_front_matter_or_its_end_has_none() {
        assert!(split("# Title\n---\nname: x\n---\n").is_none());
        assert!(split("---\nname: x\n").is_none(), "never closed");
        assert!(split("").is_none());
        let (fields, body) = split("\u{feff}---\r\nname: x\r\n---\r\nbody\r\n").unwrap();
        assert_eq!((fields["name"].as_str(), body), ("x", "body"));
        let (fields, body) = split("---\nname: x\n...\n").unwrap();
        assert_eq!((fields["name"].as_str(), body), ("x", ""));
    }

    /// Text a description may hold: words with punctuation YAML cares about, on one or
    /// more lines, without leading or trailing spaces on a line.
    fn any_text(lines: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::collection::vec("[a-zA-Z0-9éß中]{1,8}|[:#'\"\\\\/,.!?&*@%{}\\[\\]-]", 1..10),
            1..=lines,
        )
        .prop_map(|lines| {
            lines
                .into_iter()
                .map(|words| words.join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    proptest! {
        #[test]
        fn any_text_comes_back_from_each_way_of_writing_it(text in any_text(3)) {
            let read = |value: String| field(&format!("---\nname: x\ndescription: {value}\nother: y\n---\nbody"), "description");
            let escaped = text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            prop_assert_eq!(read(format!("\"{escaped}\"")), Some(text.clone()), "double quotes");
            let literal: String = text.lines().map(|l| format!("\n  {l}")).collect();
            prop_assert_eq!(read(format!("|{literal}")), Some(text.clone()), "literal block");
            if !text.contains('\n') {
                prop_assert_eq!(read(format!("'{}'", text.replace('\'', "''"))), Some(text.clone()), "single quotes");
                let words: Vec<&str> = text.split(' ').collect();
                let folded: String = words.chunks(2).map(|w| format!("\n   {}", w.join(" "))).collect();
                prop_assert_eq!(read(format!(">{folded}")), Some(text.clone()), "folded block");
                let plain_safe = !text.starts_with(|c: char| "\"'|>#-[{&*!%@`?:,]}".contains(c))
                    && !text.contains(" #");
                if plain_safe {
                    prop_assert_eq!(read(text.clone()), Some(text.clone()), "plain, colons and all");
                }
            }
        }

        #[test]
        fn any_input_is_read_without_panicking(text in "(---\n)?([ a-z:#'\"|>\\\\-]{0,12}\n){0,8}(---\n)?.{0,20}") {
            let _ = split(&text);
        }
    }
}
