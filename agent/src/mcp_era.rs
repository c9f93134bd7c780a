//! The two generations of MCP a server may speak, and what the newer one asks of a client.
//!
//! **Legacy** (revisions up to 2025-11-25; we speak 2025-06-18): an `initialize` handshake
//! opens a session. **Modern** (2026-07-28, stateless): no handshake, no session; every
//! request carries its protocol version and the client's capabilities in `params._meta`,
//! every result says what it is (`resultType`), and over HTTP each request names its
//! method and target in headers (`Mcp-Method`, `Mcp-Name`, and `Mcp-Param-*` for the tool
//! arguments a server marks with `x-mcp-header`), so gateways can route without reading
//! the body. A server of either kind works with the agent: [`crate::mcp`] finds out which
//! one it is talking to, as the 2026-07-28 revision's compatibility rules describe.

use base64::Engine;
use serde_json::{json, Value};
use tether::rpc::RpcError;

use crate::mcp::McpError;

/// The modern revision we speak.
pub const MODERN: &str = "2026-07-28";

/// `UnsupportedProtocolVersionError`: its `data.supported` lists the server's versions.
pub const UNSUPPORTED_VERSION: i64 = -32022;
/// `HeaderMismatchError`: the HTTP headers do not match the body (a tool's `x-mcp-header`
/// marks changed since it was listed).
pub const HEADER_MISMATCH: i64 = -32020;

/// Which generation of MCP a server speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Era {
    /// `initialize` and a session.
    Legacy,
    /// Every request self-describing (2026-07-28).
    Modern,
}

/// Whether `code` is one of the errors only a modern server sends (the MCP specification's
/// reserved range): such an answer, even a refusal, identifies a modern server.
pub fn is_modern_error(code: i64) -> bool {
    (-32099..=-32020).contains(&code)
}

/// `params` with the per-request fields of a modern request in `_meta`: the version, the
/// client's capabilities (the roots; questions for the user when `can_ask`, see
/// [`crate::mcp_input`]) and who it is.
pub fn with_meta(params: &Value, can_ask: bool) -> Value {
    let mut p = match params {
        Value::Object(_) => params.clone(),
        _ => json!({}),
    };
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": crate::mcp_input::capabilities(can_ask),
        "io.modelcontextprotocol/clientInfo": {"name": "aegis-agent", "version": env!("CARGO_PKG_VERSION")},
    });
    match p.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(m) => m.extend(
            meta.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        ),
        None => p["_meta"] = meta,
    }
    p
}

/// A result as the caller can use it: complete (a server of an earlier revision sends no
/// `resultType`, which means complete), or an error saying what else it is. A server asking
/// for input (`input_required`) where none can be given (listing its tools, say) gets the
/// model a clear error; where it can, [`crate::mcp`] answers before it gets here.
pub fn complete(result: Value) -> Result<Value, McpError> {
    match result.get("resultType").and_then(Value::as_str) {
        None | Some("complete") => Ok(result),
        Some("input_required") => {
            let asked: Vec<String> = result["inputRequests"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, r)| {
                    let method = r["method"].as_str().unwrap_or("?");
                    match r["params"]["message"].as_str() {
                        Some(m) => format!("{method}: {m}"),
                        None => method.to_string(),
                    }
                })
                .collect();
            Err(McpError::NeedsInput(asked.join("; ")))
        }
        Some(other) => Err(McpError::Protocol(format!("unknown resultType {other:?}"))),
    }
}

/// The versions an `UnsupportedProtocolVersionError` says the server supports.
pub fn supported(e: &RpcError) -> Option<Vec<String>> {
    if e.code != UNSUPPORTED_VERSION {
        return None;
    }
    let list = e.data.as_ref()?.get("supported")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

/// A `server/discover` result's era: modern when it lists our modern version; an answer
/// listing only versions we do not speak is an error naming them.
pub fn discovered(result: &Value) -> Result<Era, McpError> {
    let versions: Vec<&str> = result["supportedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if versions.contains(&MODERN) {
        Ok(Era::Modern)
    } else if versions.iter().any(|v| *v < MODERN) {
        // Only handshake versions: it speaks them through `initialize`.
        Ok(Era::Legacy)
    } else {
        Err(unspoken(&versions))
    }
}

/// The error for a server that speaks none of our versions.
pub fn unspoken(versions: &[&str]) -> McpError {
    McpError::Unusable(format!(
        "the server speaks MCP {}, and the agent speaks {MODERN} and {}",
        versions.join(", "),
        crate::mcp::PROTOCOL_VERSION
    ))
}

/// One tool argument a server wants mirrored into a header (`x-mcp-header` in its schema).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamHeader {
    /// `Mcp-Param-{name}`.
    pub header: String,
    /// The chain of `properties` keys leading to the argument.
    pub path: Vec<String>,
}

/// The `x-mcp-header` marks of a tool's input schema, or why the tool is unusable: a
/// client must leave out a tool whose marks break the rules (an empty or non-token name,
/// two alike, a mark on a non-primitive or a `number`, or one not reachable from the root
/// through `properties` alone).
pub fn param_headers(schema: &Value) -> Result<Vec<ParamHeader>, String> {
    let mut found: Vec<ParamHeader> = Vec::new();
    // Each node with its chain of `properties` keys from the root, `None` once the chain
    // passed anything else (an array's items, a composition, a `$ref`). A loop, not
    // recursion: the schema is the server's, and it is read on a small stack.
    let mut todo: Vec<(&Value, Option<Vec<String>>)> = vec![(schema, Some(Vec::new()))];
    while let Some((node, path)) = todo.pop() {
        match node {
            Value::Object(map) => {
                if let Some(mark) = map.get("x-mcp-header") {
                    found.push(mark_at(mark, map.get("type"), path.clone())?);
                }
                for (key, child) in map {
                    if key == "properties" {
                        for (prop, schema) in child.as_object().into_iter().flatten() {
                            let deeper = path.clone().map(|mut p| {
                                p.push(prop.clone());
                                p
                            });
                            todo.push((schema, deeper));
                        }
                    } else if !matches!(
                        key.as_str(),
                        "x-mcp-header" | "default" | "const" | "enum" | "examples"
                    ) {
                        // (Those four hold values, not schemas.)
                        todo.push((child, None));
                    }
                }
            }
            Value::Array(items) => todo.extend(items.iter().map(|i| (i, None))),
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    for h in &found {
        if !seen.insert(h.header.to_ascii_lowercase()) {
            return Err(format!("x-mcp-header {:?} is given twice", h.header));
        }
    }
    Ok(found)
}

/// The mark `mark` on a property of type `ty` reached by `path`, if it keeps the rules.
fn mark_at(mark: &Value, ty: Option<&Value>, path: Option<Vec<String>>) -> Result<ParamHeader, String> {
    let name = mark.as_str().unwrap_or("");
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(format!(
            "x-mcp-header {name:?} is not on a property reachable through `properties`"
        ));
    };
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("x-mcp-header {name:?} is not a header name"));
    }
    if !matches!(ty.and_then(Value::as_str), Some("string" | "integer" | "boolean")) {
        return Err(format!(
            "x-mcp-header {name:?} is on a property that is not a string, an integer or a boolean"
        ));
    }
    Ok(ParamHeader {
        header: name.to_string(),
        path,
    })
}

/// RFC 9110's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `Mcp-Param-*` headers for a call with `args`: each marked argument present and not
/// null, as text (a string as is, an integer in decimal, a boolean as `true`/`false`).
pub fn header_values(marks: &[ParamHeader], args: &Value) -> Vec<(String, String)> {
    marks
        .iter()
        .filter_map(|m| {
            let v = m.path.iter().try_fold(args, |v, key| v.get(key))?;
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => return None,
            };
            Some((format!("Mcp-Param-{}", m.header), header_value(&text)))
        })
        .collect()
}

/// `text` as a header value: as is when it is plain visible ASCII without spaces at its
/// ends, else Base64 between the `=?base64?` and `?=` markers (also for a plain value that
/// looks like one, so it is not taken for an encoded one).
pub fn header_value(text: &str) -> String {
    let plain = text.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
        && text.trim() == text
        && !(text.starts_with("=?base64?") && text.ends_with("?="));
    if plain {
        text.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_modern_request_carries_its_version_and_capabilities() {
        let p = with_meta(&json!({"name": "echo", "_meta": {"progressToken": 1}}), false);
        assert_eq!(p["name"], "echo");
        assert_eq!(p["_meta"]["io.modelcontextprotocol/protocolVersion"], MODERN);
        assert_eq!(
            p["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            json!({"roots": {}})
        );
        let asking = with_meta(&json!({}), true);
        assert_eq!(
            asking["_meta"]["io.modelcontextprotocol/clientCapabilities"]["elicitation"],
            json!({"form": {}, "url": {}}),
            "questions declared where a user can answer"
        );
        assert_eq!(
            p["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
            "aegis-agent"
        );
        assert_eq!(p["_meta"]["progressToken"], 1, "what was there stays");
        assert!(with_meta(&Value::Null, true)["_meta"].is_object());
    }

    #[test]
    fn results_are_complete_unless_they_say_otherwise() {
        assert!(
            complete(json!({"tools": []})).is_ok(),
            "an earlier revision sends none"
        );
        assert!(complete(json!({"resultType": "complete"})).is_ok());
        let asked = json!({"resultType": "input_required", "inputRequests": {
            "login": {"method": "elicitation/create", "params": {"message": "Your GitHub name?"}}}});
        let e = complete(asked).unwrap_err().to_string();
        assert_eq!(
            e,
            "the server asks for input the agent cannot give (elicitation/create: Your GitHub name?)"
        );
        assert!(complete(json!({"resultType": "task"})).is_err());
    }

    #[test]
    fn a_discovery_names_the_era() {
        let d = |v: Value| discovered(&json!({"supportedVersions": v}));
        assert_eq!(d(json!(["2026-07-28", "2025-11-25"])).unwrap(), Era::Modern);
        assert_eq!(d(json!(["2025-11-25"])).unwrap(), Era::Legacy);
        let e = d(json!(["2027-03-01"])).unwrap_err().to_string();
        assert!(e.contains("speaks MCP 2027-03-01"), "{e}");
        let refusal = RpcError {
            code: UNSUPPORTED_VERSION,
            message: "Unsupported protocol version".into(),
            data: Some(json!({"supported": ["2027-03-01"], "requested": MODERN})),
        };
        assert_eq!(supported(&refusal).unwrap(), ["2027-03-01"]);
        assert!(is_modern_error(UNSUPPORTED_VERSION) && is_modern_error(HEADER_MISMATCH));
        assert!(!is_modern_error(-32601) && !is_modern_error(-32000));
    }

    #[test]
    fn x_mcp_header_marks_are_found_and_bad_ones_refused() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "query": {"type": "string"},
            "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry-Run"}}},
        }});
        let marks = param_headers(&schema).unwrap();
        assert_eq!(marks.len(), 2);
        let args = json!({"region": "us-west1", "query": "SELECT 1", "opts": {"dry": true}});
        let mut got = header_values(&marks, &args);
        got.sort();
        assert_eq!(
            got,
            [
                ("Mcp-Param-Dry-Run".to_string(), "true".to_string()),
                ("Mcp-Param-Region".to_string(), "us-west1".to_string())
            ]
        );
        assert!(
            header_values(&marks, &json!({"region": null})).is_empty(),
            "null: no header"
        );
        let data = json!({"type": "object", "properties": {"q": {"type": "object",
            "default": {"x-mcp-header": "not a mark"}, "examples": [{"x-mcp-header": 1}]}}});
        assert_eq!(param_headers(&data).unwrap(), [], "values are not schemas");
        let bad =
            |prop: Value| param_headers(&json!({"type": "object", "properties": {"p": prop}})).unwrap_err();
        assert!(bad(json!({"type": "number", "x-mcp-header": "N"})).contains("not a string"));
        assert!(bad(json!({"type": "string", "x-mcp-header": ""})).contains("not a header name"));
        assert!(bad(json!({"type": "string", "x-mcp-header": "A B"})).contains("not a header name"));
        assert!(
            bad(json!({"type": "array", "items": {"type": "string", "x-mcp-header": "I"}}))
                .contains("reachable")
        );
        assert!(bad(json!({"anyOf": [{"type": "string", "x-mcp-header": "O"}]})).contains("reachable"));
        let twice = json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"},
            "b": {"type": "string", "x-mcp-header": "x"}}});
        assert!(param_headers(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn header_values_are_encoded_as_the_specification_shows() {
        assert_eq!(header_value("us-west1"), "us-west1");
        assert_eq!(header_value("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(header_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
    }

    #[test]
    fn a_schema_of_any_depth_is_read_on_a_small_stack() {
        // The marks are looked for on the start thread, whose stack is 128 KiB; far deeper
        // than the 128 levels serde_json reads, and than debug frames would allow if the
        // search recursed.
        let mut schema = json!({"type": "string", "x-mcp-header": "Deep"});
        for i in 0..400 {
            schema = json!({"type": "object", "properties": {format!("p{i}"): {"anyOf": [schema]}}});
        }
        let got = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(scope, || param_headers(&schema))
                .unwrap()
                .join()
                .unwrap()
        });
        assert!(got.unwrap_err().contains("not on a property reachable"));
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "(string|integer|number|boolean|object|[a-zA-Z -]{0,6})".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    "(type|properties|x-mcp-header|items|anyOf|[a-z]{1,3})",
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_schema_gives_marks_or_a_reason_and_every_mark_is_sound(schema in any_json(), args in any_json()) {
            if let Ok(marks) = param_headers(&schema) {
                for m in &marks {
                    prop_assert!(!m.path.is_empty() && m.header.bytes().all(is_tchar));
                }
                for (name, value) in header_values(&marks, &args) {
                    prop_assert!(name.starts_with("Mcp-Param-"));
                    prop_assert!(value.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)));
                }
            }
        }

        #[test]
        fn any_header_value_is_safe_and_decodes_back(text in "\\PC{0,40}|[ -~\t\n\r]{0,40}") {
            let v = header_value(&text);
            prop_assert!(v.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)), "{v:?}");
            let back = match v.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
                Some(b64) => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap(),
                None => v.clone(),
            };
            prop_assert_eq!(back, text);
        }
    }
}
