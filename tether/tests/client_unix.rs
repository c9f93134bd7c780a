//! The aegisd client against a real HTTP server on a unix socket.

use tether::client::{AegisClient, ClientError};
use tether::frame::{Frame, Session};

fn server(dir: &std::path::Path) -> (tiny_http::Server, std::path::PathBuf) {
    let sock = dir.join("aegisd.sock");
    let _ = std::fs::remove_file(&sock);
    (tiny_http::Server::http_unix(&sock).unwrap(), sock)
}

#[test]
fn post_frame_secrets_and_stream_against_a_unix_socket_server() {
    let dir = std::env::temp_dir().join(format!("tether-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (srv, sock) = server(&dir);
    let handle = std::thread::spawn(move || {
        let mut posted = Vec::new();
        for _ in 0..5 {
            let mut req = srv.recv().unwrap();
            let url = req.url().to_string();
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let resp = match (req.method().as_str(), url.as_str()) {
                ("POST", "/v1/instances/my-agent/tether") => {
                    posted.push(body);
                    tiny_http::Response::from_string("").with_status_code(202)
                }
                ("POST", _) => tiny_http::Response::from_string(r#"{"error":"instance \"nope\" not found"}"#)
                    .with_status_code(404),
                ("GET", "/v1/secrets/TOKEN") => tiny_http::Response::from_string(r#"{"value":"s3cret"}"#),
                ("GET", "/v1/instances/my-agent/tether/stream?after=7") => {
                    let body = "{\"v\":1,\"type\":\"assistant.delta\",\"seq\":8,\"payload\":{\"text\":\"a\"}}\n\n{\"v\":1,\"type\":\"assistant.done\",\"seq\":9,\"payload\":{\"text\":\"ab\"}}\n";
                    // An unknown length makes tiny_http send it chunked, as aegisd does.
                    let r = tiny_http::Response::new(200.into(), vec![], body.as_bytes(), None, None);
                    req.respond(r).unwrap();
                    continue;
                }
                _ => tiny_http::Response::from_string("{}").with_status_code(500),
            };
            req.respond(resp).unwrap();
        }
        posted
    });
    let c = AegisClient::new(&sock);
    let f = Frame::user_message(Session::new("test", "1"), "Hello!", None);
    c.post_frame("my-agent", &f).unwrap();
    let err = c.post_frame("nope", &f).unwrap_err();
    assert!(
        matches!(err, ClientError::Status { code: 404, ref message } if message == "instance \"nope\" not found"),
        "{err}"
    );
    assert_eq!(c.get_secret("TOKEN").unwrap(), "s3cret");
    let frames: Vec<Frame> = c
        .stream("my-agent", Some(7))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        frames.iter().map(|f| f.seq.unwrap()).collect::<Vec<_>>(),
        vec![8, 9]
    );
    let err = c.get_secret("missing").unwrap_err();
    assert_eq!(err.status(), Some(500));
    let posted = handle.join().unwrap();
    assert_eq!(Frame::parse(posted[0].as_bytes()).unwrap(), f);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unreachable_socket_names_the_path() {
    let c = AegisClient::new("/nonexistent/aegisd.sock");
    let err = c.get_secret("X").unwrap_err();
    assert!(err.is_transient());
    assert!(err.to_string().contains("/nonexistent/aegisd.sock"), "{err}");
}
