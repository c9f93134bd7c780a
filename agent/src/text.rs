//! Small pieces of text handling several modules share: a text cut for a list or a
//! prompt, and the command a chat message starts with.

/// `text`, trimmed, cut to `max` characters, marked where it was cut.
pub fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `text` on one line (each run of whitespace a single space), cut as [`clip`] cuts it:
/// a stored text in a list.
pub fn one_line(text: &str, max: usize) -> String {
    clip(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// An id as a command names it: `3` is `PREFIX3` (`cron-3`), as people read a list;
/// anything else is taken as it is.
pub fn full_id(word: &str, prefix: &str) -> String {
    match word.parse::<u64>() {
        Ok(n) => format!("{prefix}{n}"),
        Err(_) => word.to_string(),
    }
}

/// The command a message starts with (`/name`, `/name@bot`), lower case, and the text
/// after it; `None` for a message that is not a command.
pub fn slash_command(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start().strip_prefix('/')?;
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let word = text[..end].split('@').next()?;
    if word.is_empty() {
        return None;
    }
    Some((word.to_ascii_lowercase(), text[end..].trim()))
}
