//! Text put before a model as a quote (a file sent to the bot, a command's output), in a
//! Markdown fence longer than any run of backticks inside, so nothing in it can end the
//! quote early and pass for the words around it.

/// `text` in a fence none of its lines can close.
pub fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{}\n{fence}", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_fenced_text_never_escapes(text in ".{0,200}") {
            let quoted = fenced(&text);
            let fence: String = quoted.chars().take_while(|&c| c == '`').collect();
            prop_assert!(fence.len() >= 3);
            let inner = &quoted[fence.len() + 1..quoted.len() - fence.len() - 1];
            prop_assert_eq!(inner, text.trim_end_matches('\n'));
            prop_assert!(!inner.contains(&fence));
        }
    }
}
