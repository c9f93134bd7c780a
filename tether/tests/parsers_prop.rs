//! Property tests for every tether parser: arbitrary input never panics, and everything
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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

    #[test]
    fn addr_parser_never_panics(s in ".{0,40}") {
        let _ = s.parse::<tether::Addr>();
        let _ = tether::hybrid::parse_connect(&s);
    }
}
