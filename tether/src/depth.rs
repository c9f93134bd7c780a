//! How deep a JSON text nests, checked before it is read.
//!
//! Everything a peer sends (a guest's frames and notifications to the host, an MCP
//! server's answers to the agent) is read by serde_json, which accepts 128 levels, and
//! then kept, cloned, shown and dropped by code that recurses once per level, on the
//! small stacks of the threads that handle it. A message nested that deep overflowed
//! such a stack in a debug build, and an overflow aborts the whole process: serve and its
//! instances, or the agent. No message of ours, nor any an MCP server needs, comes close
//! to [`MAX_NESTING`], so anything deeper is refused as malformed before it is read.

/// Deepest nesting of arrays and objects read from a peer.
pub const MAX_NESTING: usize = 64;

/// How deep arrays and objects nest in `json` (brackets inside strings do not count).
/// Bytes that are not JSON give a number too; the reader then refuses them.
pub fn nesting(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How many `[` and `{` bytes `json` holds. memchr's search is vectorised by hand; a
/// byte loop is not in our size-optimised release build, and this count runs on every
/// message (a byte loop cost a tenth of the frame codec's throughput).
fn opening_brackets(json: &[u8]) -> usize {
    memchr::memchr2_iter(b'[', b'{', json).count()
}

/// `Err(depth)` when `json` nests deeper than [`MAX_NESTING`].
pub fn check(json: &[u8]) -> Result<(), usize> {
    // A text with no more opening brackets than the limit cannot nest past it: the common
    // case, settled by a count the compiler vectorises (the full scan cost a sixth of the
    // frame codec's throughput).
    if opening_brackets(json) <= MAX_NESTING {
        return Ok(());
    }
    match nesting(json) {
        d if d > MAX_NESTING => Err(d),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn brackets_in_strings_do_not_count() {
        assert_eq!(nesting(b"{}"), 1);
        assert_eq!(nesting(br#"{"a": [1, {"b": "[[[{{"}], "c": "\\"}"#), 3);
        assert_eq!(nesting(br#""\"[" "#), 0);
        assert_eq!(
            check(format!("{}1{}", "[".repeat(64), "]".repeat(64)).as_bytes()),
            Ok(())
        );
        assert_eq!(
            check(format!("{}1{}", "[".repeat(65), "]".repeat(65)).as_bytes()),
            Err(65)
        );
        // Many brackets, side by side or in strings, are not depth.
        let wide = format!("[{}1]", "[1],".repeat(200));
        assert_eq!(check(wide.as_bytes()), Ok(()));
        let quoted = format!(r#"["{}"]"#, "{[".repeat(100));
        assert_eq!(check(quoted.as_bytes()), Ok(()));
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[\\[\\]{}\"\\\\a-z ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(8, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[\\[{\"a-z]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        #[test]
        fn brackets_are_counted_as_a_byte_loop_counts_them(bytes in proptest::collection::vec(
            prop_oneof![Just(b'['), Just(b'{'), Just(b';'), Just(0xDB), Just(0xFB), Just(0x7A), Just(0x5C), any::<u8>()],
            0..100,
        )) {
            let naive = bytes.iter().filter(|&&b| b == b'[' || b == b'{').count();
            prop_assert_eq!(opening_brackets(&bytes), naive);
        }

        #[test]
        fn nesting_is_the_depth_serde_json_reads(v in any_json()) {
            prop_assert_eq!(nesting(v.to_string().as_bytes()), depth(&v));
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            prop_assert_eq!(nesting(pretty.as_bytes()), depth(&v));
        }
    }
}
