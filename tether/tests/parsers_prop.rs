//! Property tests for every tether parser (and the loopback check on URLs): arbitrary input never panics, and everything
//! we encode decodes back to the same value.

use std::io::Cursor;

use proptest::prelude::*;
use serde_json::{Map, Value};
use tether::frame::{Frame, Session};
use tether::lines::{LineError, LineReader};
use tether::rpc::Message;

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        "[a-z]{1,8}(\\.[a-z_]{1,8})?",
        proptest::option::of(("[a-z]{1,8}", ".{1,10}")),
        proptest::option::of(".{0,10}"),
        proptest::option::of(any::<u64>()),
        proptest::option::of(prop::collection::btree_map("[a-z]{1,5}", json_value(), 0..4)),
        prop::collection::btree_map("x_[a-z]{1,5}", json_value(), 0..3),
    )
        .prop_map(|(kind, session, msg_id, seq, payload, extra)| {
            let mut f = Frame::new(&kind, session.map(|(c, i)| Session::new(c, i)));
            f.msg_id = msg_id;
            f.seq = seq;
            if let Some(p) = payload {
                f = f.with_payload(&p);
            }
            f.extra = extra.into_iter().collect::<Map<String, Value>>();
            f
        })
}

// Case counts come from PROPTEST_CASES (default 256); scripts/fuzz.sh runs them at scale.
proptest! {

    #[test]
    fn loopback_check_never_panics_and_matches_std_for_ip_literals(
        text in ".{0,40}",
        ip in any::<[u8; 4]>(),
        v6 in any::<[u16; 8]>(),
        port in any::<u16>(),
    ) {
        let _ = tether::http::is_loopback(&text);
        let _ = tether::http::is_loopback(&format!("http://{text}/"));
        let v4 = std::net::Ipv4Addr::from(ip);
        prop_assert_eq!(tether::http::is_loopback(&format!("http://{v4}:{port}/v1")), v4.is_loopback());
        let v6 = std::net::Ipv6Addr::from(v6);
        prop_assert_eq!(
            tether::http::is_loopback(&format!("https://[{v6}]:{port}")),
            v6.to_canonical().is_loopback()
        );
    }

    #[test]
    fn error_words_never_panic_and_always_say_the_routers_and_the_providers_words(
        text in ".{0,300}",
        raw in json_value(),
        message in "[a-zA-Z ]{1,20}",
        said in "[a-zA-Z ]{1,20}",
    ) {
        let _ = tether::http::error_words(&text);
        // Whatever a router nests in `metadata.raw`, as text or as JSON text.
        for inner in [raw.to_string(), text.clone()] {
            let body = serde_json::json!({"error": {"message": message, "metadata": {"raw": inner}}});
            let words = tether::http::error_words(&body.to_string());
            prop_assert!(words.starts_with(&message), "{}", words);
        }
        let body = serde_json::json!({"error": {"message": message, "metadata": {
            "raw": serde_json::json!({"error": {"message": said}}).to_string(), "provider_name": "P"}}});
        prop_assert_eq!(tether::http::error_words(&body.to_string()), format!("{message} (P: {said})"));
    }

    #[test]
    fn frames_round_trip_with_unknown_fields(f in frame()) {
        let back: Frame = serde_json::from_str(&f.to_json()).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn frame_parser_never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Frame::parse(&b);
    }

    #[test]
    fn frame_parser_never_panics_on_json(v in json_value()) {
        let _ = Frame::parse(v.to_string().as_bytes());
    }

    #[test]
    fn rpc_lines_round_trip(f in frame(), id in any::<u64>()) {
        let note = Message::tether_frame(&f).encode();
        let back = Message::decode(&note[..note.len() - 1]).unwrap();
        let got: Frame = match back {
            Message::Notification { params, .. } => serde_json::from_str(params.unwrap().get()).unwrap(),
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(got, f);
        let req = Message::request(id, "run", &serde_json::json!({"command": ["x"]})).encode();
        let is_request = matches!(Message::decode(&req[..req.len() - 1]).unwrap(), Message::Request { .. });
        prop_assert!(is_request);
    }

    #[test]
    fn rpc_decoder_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&b);
    }

    /// Whatever the bytes, the line reader returns every newline-terminated short line,
    /// reports long ones, and terminates.
    #[test]
    fn line_reader_keeps_every_short_line(lines in prop::collection::vec("[a-z{}\":,]{0,40}", 0..20), limit in 1usize..30) {
        let mut src = Vec::new();
        for l in &lines {
            src.extend_from_slice(l.as_bytes());
            src.push(b'\n');
        }
        let mut r = LineReader::with_limit(std::io::BufReader::with_capacity(7, Cursor::new(src)), limit);
        let mut got = Vec::new();
        let mut too_long = 0;
        loop {
            match r.next_line() {
                Ok(Some(l)) => got.push(String::from_utf8(l.to_vec()).unwrap()),
                Ok(None) => break,
                Err(LineError::TooLong { .. }) => too_long += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let want: Vec<String> = lines.iter().filter(|l| !l.is_empty() && l.len() <= limit).cloned().collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(too_long, lines.iter().filter(|l| l.len() > limit).count());
    }

    /// The NDJSON egress stream reader: frames written whole come back in order however
    /// the bytes are cut into reads; garbage lines between them are reported, not fatal.
    #[test]
    fn ndjson_stream_reader_survives_any_cut_and_garbage(
        frames in prop::collection::vec(frame(), 0..8),
        garbage in prop::collection::vec("[^\n]{0,30}", 0..4),
        chunk in 1usize..64,
    ) {
        let mut src = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            src.extend_from_slice(f.to_json().as_bytes());
            src.push(b'\n');
            if let Some(g) = garbage.get(i) {
                src.extend_from_slice(g.as_bytes());
                src.push(b'\n');
            }
        }
        let reader = ChunkedReader { data: src, pos: 0, chunk };
        let got: Vec<Frame> = tether::client::FrameStream::from_reader(Box::new(reader)).filter_map(Result::ok).collect();
        // A garbage line may happen to be a valid frame; every real frame must be there, in order.
        let mut it = got.iter();
        for f in &frames {
            prop_assert!(it.any(|g| g == f), "frame missing or out of order");
        }
    }

    #[test]
    fn ndjson_stream_reader_never_panics(b in prop::collection::vec(any::<u8>(), 0..300)) {
        for _ in tether::client::FrameStream::from_reader(Box::new(Cursor::new(b))) {}
    }

    #[test]
    fn addr_parser_never_panics(s in ".{0,40}") {
        let _ = s.parse::<tether::Addr>();
        let _ = tether::hybrid::parse_connect(&s);
    }
}

/// Hands out at most `chunk` bytes per read, like a socket.
struct ChunkedReader {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl std::io::Read for ChunkedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
