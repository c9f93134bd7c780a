//! Newline-delimited reading with a size limit (the framing of PROTOCOL.md §3 and of the
//! NDJSON egress stream).
//!
//! A peer that sends a line longer than the limit must not make us buffer it whole nor
//! lose our place in the stream: the reader discards the rest of that line, reports
//! `LineError::TooLong`, and the next call returns the line after it.

use std::fmt;
use std::io::{self, BufRead};

/// Default largest line accepted: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// Why a line could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The underlying reader failed; the stream is no longer usable.
    Io(io::Error),
    /// A line exceeded the limit; it was skipped and the stream is still usable.
    TooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The stream ended in the middle of a line (no trailing `\n`); the partial line is dropped.
    Unterminated {
        /// How many bytes the unfinished line had.
        len: usize,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Io(e) => write!(f, "read failed: {e}"),
            LineError::TooLong { limit } => write!(f, "line longer than {limit} bytes skipped"),
            LineError::Unterminated { len } => {
                write!(f, "stream ended inside a line ({len} bytes without newline)")
            }
        }
    }
}

impl std::error::Error for LineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LineError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl LineError {
    /// Whether the stream can still be read after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, LineError::TooLong { .. })
    }
}

/// Reads `\n`-terminated lines from a `BufRead`, skipping blank lines.
#[derive(Debug)]
pub struct LineReader<R> {
    /// The byte source; owned so the reader can resynchronise after an oversized line.
    inner: R,
    /// Largest accepted line in bytes, excluding the newline.
    limit: usize,
    /// Reused across calls to avoid an allocation per line.
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    /// A reader with the default 1 MiB limit.
    pub fn new(inner: R) -> LineReader<R> {
        LineReader::with_limit(inner, DEFAULT_MAX_LINE)
    }

    /// A reader with a custom limit in bytes.
    pub fn with_limit(inner: R, limit: usize) -> LineReader<R> {
        LineReader {
            inner,
            limit,
            buf: Vec::new(),
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next non-blank line without its `\n` (and without a `\r` before it), or `None`
    /// at a clean end of stream.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        loop {
            self.buf.clear();
            let mut overflow = false;
            loop {
                let available = match self.inner.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(LineError::Io(e)),
                };
                if available.is_empty() {
                    // End of stream.
                    if overflow {
                        return Err(LineError::TooLong { limit: self.limit });
                    }
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    let len = self.buf.len();
                    self.buf.clear();
                    return Err(LineError::Unterminated { len });
                }
                let (chunk, found) = match memchr_newline(available) {
                    Some(i) => (&available[..i], Some(i)),
                    None => (available, None),
                };
                if !overflow {
                    if self.buf.len() + chunk.len() > self.limit {
                        overflow = true;
                        self.buf.clear();
                    } else {
                        self.buf.extend_from_slice(chunk);
                    }
                }
                let used = found.map_or(chunk.len(), |i| i + 1);
                self.inner.consume(used);
                if found.is_some() {
                    break;
                }
            }
            if overflow {
                return Err(LineError::TooLong { limit: self.limit });
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(&self.buf));
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn lines(src: &[u8], limit: usize) -> Vec<Result<String, String>> {
        // A tiny BufReader capacity exercises lines split across fills.
        let mut r = LineReader::with_limit(BufReader::with_capacity(3, Cursor::new(src.to_vec())), limit);
        let mut out = Vec::new();
        loop {
            match r.next_line() {
                Ok(Some(l)) => out.push(Ok(String::from_utf8_lossy(l).into_owned())),
                Ok(None) => return out,
                Err(e) => {
                    let stop = !e.is_recoverable();
                    out.push(Err(e.to_string()));
                    if stop {
                        return out;
                    }
                }
            }
        }
    }

    #[test]
    fn skips_blank_lines_and_strips_crlf() {
        assert_eq!(
            lines(b"\n a\r\n\n  \nbb\n", 100),
            vec![Ok(" a".into()), Ok("bb".into())]
        );
    }

    #[test]
    fn oversized_line_is_skipped_and_stream_continues() {
        let mut src = vec![b'x'; 50];
        src.extend_from_slice(b"\nok\n");
        let got = lines(&src, 10);
        assert_eq!(got[0], Err("line longer than 10 bytes skipped".into()));
        assert_eq!(got[1], Ok("ok".into()));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn ten_mib_line_does_not_buffer_and_is_reported() {
        let mut src = vec![b'y'; 10 << 20];
        src.extend_from_slice(b"\n{\"a\":1}\n");
        let mut r = LineReader::new(Cursor::new(src));
        assert!(matches!(r.next_line(), Err(LineError::TooLong { .. })));
        assert!(r.buf.capacity() <= DEFAULT_MAX_LINE * 2);
        assert_eq!(r.next_line().unwrap().unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn missing_final_newline_is_an_error() {
        assert_eq!(
            lines(b"a\nbc", 10),
            vec![
                Ok("a".into()),
                Err("stream ended inside a line (2 bytes without newline)".into())
            ]
        );
        assert_eq!(lines(b"a\n   ", 10), vec![Ok("a".into())]);
    }
}
