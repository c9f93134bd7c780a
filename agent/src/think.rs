//! A reasoning block written into the answer itself: `<think>…</think>` at the start of a
//! model's content, as llama.cpp, LM Studio and vLLM send a reasoning model's thoughts when
//! no reasoning parser separates them (Ollama and DeepSeek send them in a field of their
//! own). Left in, the user reads the model's thoughts as its answer and the session stores
//! them as if they were one. Only a block that opens the content counts: a `<think>` later
//! on is text the model meant to write.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Where the content stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace, or the beginning of `<think>`, so far (held here).
    Undecided(String),
    /// Inside the block; holds what might be the beginning of `</think>`.
    Thinking(String),
    /// Just after the block: whitespace separating it from the answer is dropped.
    AfterThinking,
    /// The answer: everything passes.
    Answer,
}

/// Splits one model round's content into reasoning and answer, chunk by chunk, holding
/// back only what could still be part of a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineThink {
    state: State,
}

impl Default for InlineThink {
    fn default() -> Self {
        InlineThink {
            state: State::Undecided(String::new()),
        }
    }
}

/// What one piece of content turned out to be.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    /// The model's reasoning.
    pub reasoning: String,
    /// The answer.
    pub text: String,
}

impl InlineThink {
    /// The next piece of content.
    pub fn feed(&mut self, piece: &str) -> Split {
        let mut out = Split::default();
        // Copied only where a tag is split off: nearly every chunk of a reply passes as it is.
        let mut rest = std::borrow::Cow::Borrowed(piece);
        loop {
            match std::mem::replace(&mut self.state, State::Answer) {
                State::Undecided(mut held) => {
                    held.push_str(&rest);
                    let start = held.trim_start();
                    if start.is_empty() || (start.len() < OPEN.len() && OPEN.starts_with(start)) {
                        self.state = State::Undecided(held);
                        return out;
                    }
                    match start.strip_prefix(OPEN) {
                        Some(after) => {
                            rest = after.to_string().into();
                            self.state = State::Thinking(String::new());
                        }
                        None => {
                            out.text.push_str(&held);
                            return out;
                        }
                    }
                }
                State::Thinking(mut held) => {
                    held.push_str(&rest);
                    if let Some(end) = held.find(CLOSE) {
                        out.reasoning.push_str(&held[..end]);
                        rest = held[end + CLOSE.len()..].to_string().into();
                        self.state = State::AfterThinking;
                        continue;
                    }
                    // Keep back the longest end that could begin `</think>`; it is ASCII,
                    // so the cut falls on a character boundary.
                    let keep = (1..CLOSE.len().min(held.len() + 1))
                        .rev()
                        .find(|&k| held.ends_with(&CLOSE[..k]))
                        .unwrap_or(0);
                    let cut = held.len() - keep;
                    out.reasoning.push_str(&held[..cut]);
                    self.state = State::Thinking(held[cut..].to_string());
                    return out;
                }
                State::AfterThinking => {
                    let answer = rest.trim_start();
                    if answer.is_empty() {
                        self.state = State::AfterThinking;
                    } else {
                        out.text.push_str(answer);
                    }
                    return out;
                }
                State::Answer => {
                    out.text.push_str(&rest);
                    return out;
                }
            }
        }
    }

    /// The content ended: what was held back is given out as what it was taken for.
    pub fn finish(&mut self) -> Split {
        let mut out = Split::default();
        match std::mem::replace(&mut self.state, State::Answer) {
            // Whitespace alone, or a `<thi` that never became a tag: it was the answer.
            State::Undecided(held) => out.text = held,
            // A block that never closed (the model ran out of tokens while thinking).
            State::Thinking(held) => out.reasoning = held,
            State::AfterThinking | State::Answer => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(pieces: &[&str]) -> Split {
        let mut t = InlineThink::default();
        let mut all = Split::default();
        for p in pieces.iter().copied() {
            let s = t.feed(p);
            all.reasoning.push_str(&s.reasoning);
            all.text.push_str(&s.text);
        }
        let s = t.finish();
        all.reasoning.push_str(&s.reasoning);
        all.text.push_str(&s.text);
        all
    }

    fn split(reasoning: &str, text: &str) -> Split {
        Split {
            reasoning: reasoning.into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_leading_block_is_reasoning_and_the_rest_the_answer() {
        assert_eq!(
            whole(&["<think>\nThe user greets.\n</think>\n\nHello!"]),
            split("\nThe user greets.\n", "Hello!")
        );
        assert_eq!(
            whole(&[
                "\n",
                "<th",
                "ink>",
                "hm </",
                "thin",
                "k>",
                "\n",
                "\n",
                "Hi <think> there"
            ]),
            split("hm ", "Hi <think> there")
        );
    }

    #[test]
    fn content_without_a_leading_block_passes_at_once() {
        let mut t = InlineThink::default();
        assert_eq!(
            t.feed("Sure: <think>x</think>"),
            split("", "Sure: <think>x</think>")
        );
        assert_eq!(t.feed("<think>"), split("", "<think>"));
        // Only what could still be the tag is held, and given out as text in the end.
        let mut t = InlineThink::default();
        assert_eq!(t.feed("  <thi"), split("", ""));
        assert_eq!(t.finish(), split("", "  <thi"));
        assert_eq!(whole(&["<thinking>"]), split("", "<thinking>"));
    }

    #[test]
    fn reasoning_streams_while_only_a_possible_tag_is_held() {
        let mut t = InlineThink::default();
        assert_eq!(t.feed("<think>step one"), split("step one", ""));
        assert_eq!(t.feed(", two </th"), split(", two ", ""));
        assert_eq!(t.feed("en"), split("</then", ""));
        // A block cut off by the token limit is reasoning all the same.
        assert_eq!(t.feed(" <"), split(" ", ""));
        assert_eq!(t.finish(), split("<", ""));
        assert_eq!(whole(&["<think>é</think>ü"]), split("é", "ü"));
    }

    proptest! {
        /// However the content is cut into chunks, the split is the same.
        #[test]
        fn chunking_never_changes_the_split(
            reasoning in "[a-z<>/ \\n]{0,30}",
            text in "[a-zé<>/ \\n]{0,30}",
            lead in "[ \\n]{0,3}",
            tagged in any::<bool>(),
            cuts in proptest::collection::vec(0usize..80, 0..8),
        ) {
            let content = if tagged {
                format!("{lead}<think>{reasoning}</think>{text}")
            } else {
                format!("{lead}{text}")
            };
            let one = whole(&[&content]);
            let mut at: Vec<usize> = cuts
                .into_iter()
                .map(|c| c % (content.len() + 1))
                .filter(|&c| content.is_char_boundary(c))
                .collect();
            at.sort_unstable();
            at.dedup();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in at {
                pieces.push(&content[from..c]);
                from = c;
            }
            pieces.push(&content[from..]);
            prop_assert_eq!(whole(&pieces), one.clone());
            // Nothing is lost: reasoning and answer are the content less its tags and the
            // whitespace around them.
            if tagged && !reasoning.contains("</think>") {
                prop_assert_eq!(one.reasoning, reasoning);
                prop_assert_eq!(one.text, text.trim_start());
            } else if !tagged && !content.trim_start().starts_with("<think>") {
                prop_assert_eq!(one.text, content);
            }
        }
    }
}
