//! The body of a `sendDocument` or `sendVoice`: multipart/form-data streamed from the file, with its
//! length known up front. ureq's own multipart form knows a file part's length only
//! through `Part::file`, which links in its MIME type table (about 200 KB of the gateway
//! for a type Telegram does not need: a document goes as `application/octet-stream`);
//! a reader part would be sent chunked.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Cursor, Read};

/// What an upload is: the form field of the file, and the type it is sent as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `sendDocument`'s `document`, as `application/octet-stream`.
    Document,
    /// `sendVoice`'s `voice`, as `audio/ogg` (Ogg Opus, what Telegram plays as a voice
    /// message).
    Voice,
}

impl Kind {
    /// The Bot API method.
    pub fn method(self) -> &'static str {
        match self {
            Kind::Document => "sendDocument",
            Kind::Voice => "sendVoice",
        }
    }

    fn field(self) -> (&'static str, &'static str) {
        match self {
            Kind::Document => ("document", "application/octet-stream"),
            Kind::Voice => ("voice", "audio/ogg"),
        }
    }
}

/// A file upload: the form's fields, then the file, then the closing boundary.
pub struct Upload {
    boundary: String,
    head: Vec<u8>,
    file: File,
    file_len: u64,
    tail: Vec<u8>,
}

impl Upload {
    /// `file` as the field of `kind`, named `name`, for `chat` (and `topic` of it).
    pub fn new(kind: Kind, chat: i64, topic: Option<i64>, name: &str, file: File) -> io::Result<Upload> {
        let boundary = boundary();
        let mut head = String::new();
        let mut field = |n: &str, v: &str| {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n"
            ));
        };
        field("chat_id", &chat.to_string());
        if let Some(t) = topic {
            field("message_thread_id", &t.to_string());
        }
        let (field, content_type) = kind.field();
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{}\"\r\n\
             Content-Type: {content_type}\r\n\r\n",
            quoted(name)
        ));
        let file_len = file.metadata()?.len();
        Ok(Upload {
            tail: format!("\r\n--{boundary}--\r\n").into_bytes(),
            head: head.into_bytes(),
            boundary,
            file,
            file_len,
        })
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.file_len + self.tail.len() as u64
    }

    /// The body. A file that grew meanwhile is cut at the length announced.
    pub fn into_reader(self) -> impl Read + Send + 'static {
        Cursor::new(self.head)
            .chain(self.file.take(self.file_len))
            .chain(Cursor::new(self.tail))
    }
}

/// A boundary no file is likely to hold: 128 random bits (std's hasher keys come from the
/// operating system's randomness).
fn boundary() -> String {
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("aegis-{:016x}{:016x}", random(), random())
}

/// `name` fit for a quoted header parameter: quotes and line breaks percent-encoded, as
/// browsers send them.
fn quoted(name: &str) -> String {
    name.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_announced_length_is_the_bodys_and_fields_come_first() {
        let path = std::env::temp_dir().join(format!("aegis-gw-unit-upload-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"%PDF bytes")
            .unwrap();
        let up = Upload::new(
            Kind::Document,
            -100,
            Some(7),
            "a \"b\".pdf",
            File::open(&path).unwrap(),
        )
        .unwrap();
        let voice = Upload::new(Kind::Voice, 5, None, "voice.ogg", File::open(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut spoken = Vec::new();
        voice.into_reader().read_to_end(&mut spoken).unwrap();
        let spoken = String::from_utf8(spoken).unwrap();
        assert!(
            spoken.contains(
                "name=\"voice\"; filename=\"voice.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n%PDF bytes"
            ),
            "{spoken}"
        );
        assert!(!spoken.contains("message_thread_id"));
        let ct = up.content_type();
        let b = ct
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap()
            .to_string();
        let len = up.len();
        let mut body = Vec::new();
        up.into_reader().read_to_end(&mut body).unwrap();
        assert_eq!(body.len() as u64, len);
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n-100\r\n"
        )));
        assert!(text.contains("name=\"message_thread_id\"\r\n\r\n7\r\n"));
        assert!(text.contains(
            "filename=\"a %22b%22.pdf\"\r\nContent-Type: application/octet-stream\r\n\r\n%PDF bytes\r\n"
        ));
        assert!(text.ends_with(&format!("\r\n--{b}--\r\n")));
        assert_ne!(boundary(), boundary());
    }
}
