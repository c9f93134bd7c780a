//! An incremental Server-Sent Events parser (the WHATWG event-stream format), fed with
//! whatever byte chunks the network delivers.
//!
//! Events may be split anywhere across reads, lines may end in `\n`, `\r\n` or `\r`
//! (even with the `\r` and `\n` in different reads), `data:` lines accumulate with `\n`
//! between them, and `:` comment lines (keep-alives) are ignored. A line longer than the
//! limit is an error rather than unbounded memory.

use std::fmt;

/// Longest line accepted (bytes); LLM chunks are a few hundred bytes.
pub const MAX_LINE: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field; `None` means the default `message` type.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// A line exceeded `MAX_LINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong;

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SSE line longer than {MAX_LINE} bytes")
    }
}

impl std::error::Error for LineTooLong {}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` now belongs to that line end.
    after_cr: bool,
    /// `event:` of the event being assembled.
    event: Option<String>,
    /// `data:` of the event being assembled.
    data: String,
    /// Whether any `data:` line was seen for the current event.
    has_data: bool,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feed the next chunk; complete events are pushed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        // An empty read must not forget a pending `\r`: the `\n` may come in the next one.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_line_bytes(&rest[..i])?;
            self.end_line(out);
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => rest = &rest[i + 2..],
                    Some(_) => rest = &rest[i + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[i + 1..];
            }
        }
        self.push_line_bytes(rest)
    }

    /// The stream ended: an event without its closing blank line is discarded, as the
    /// spec says, but reported so callers can tell a cut stream.
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty() || self.has_data;
        *self = Parser::default();
        pending
    }

    fn push_line_bytes(&mut self, b: &[u8]) -> Result<(), LineTooLong> {
        if self.line.len() + b.len() > MAX_LINE {
            self.line.clear();
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(b);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&*text, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter for LLM streams
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> Event {
        Event {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn anthropic_sequence_with_ping_and_comments() {
        let src = b": keep-alive\n\nevent: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\n";
        let got = parse_chunks(&[src]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], ev(Some("ping"), "{\"type\": \"ping\"}"));
        assert_eq!(got[2].event.as_deref(), Some("content_block_delta"));
    }

    #[test]
    fn multi_line_data_and_crlf_split_across_reads() {
        let got = parse_chunks(&[b"data: a\r", b"\ndata:b\r\n\r", b"\ndata: [DONE]\r\r"]);
        assert_eq!(got, vec![ev(None, "a\nb"), ev(None, "[DONE]")]);
    }

    #[test]
    fn an_empty_read_between_cr_and_lf_changes_nothing() {
        let got = parse_chunks(&[b"data: x\r\n\r", b"", b"\nevent: a\r\ndata: \r\n\r\n"]);
        assert_eq!(got, vec![ev(None, "x"), ev(Some("a"), "")]);
    }

    #[test]
    fn unterminated_event_is_reported_on_finish() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel", &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert!(p.finish());
        assert!(!p.finish());
    }

    #[test]
    fn oversized_line_is_an_error() {
        let mut p = Parser::new();
        let big = vec![b'x'; MAX_LINE + 1];
        assert_eq!(p.feed(&big, &mut Vec::new()), Err(LineTooLong));
    }

    proptest! {
        /// However the stream is cut into reads, the same events come out.
        #[test]
        fn split_points_do_not_change_events(
            events in prop::collection::vec(("[a-z_]{0,8}", "[ -~]{0,30}"), 0..8),
            cuts in prop::collection::vec(0usize..400, 0..10),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut src = String::new();
            for (e, d) in &events {
                if !e.is_empty() { src.push_str(&format!("event: {e}{nl}")); }
                src.push_str(&format!("data: {d}{nl}{nl}"));
            }
            let whole = parse_chunks(&[src.as_bytes()]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(src.len())).collect();
            cuts.sort();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&src.as_bytes()[last..c]); last = c; }
            pieces.push(&src.as_bytes()[last..]);
            prop_assert_eq!(parse_chunks(&pieces), whole.clone());
            prop_assert_eq!(whole.len(), events.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut p = Parser::new();
            let mut out = Vec::new();
            for c in &chunks { let _ = p.feed(c, &mut out); }
            p.finish();
        }
    }
}
