//! Recordings sent to the bot: voice messages, audio files, video messages, and the
//! sound of videos (the picture does not reach the agent). The gateway
//! holds no speech-to-text key, so it passes the recording on (inline, as an image; one
//! too large for a tether line saved into the workspace's inbox, by path) and the agent
//! writes down what is said. The message's text names the recording, so an
//! agent that cannot transcribe (upstream's) still knows one was sent, and the model can
//! say so.

use crate::telegram::{Document, Message};

/// Largest recording passed inline: its base64 must fit the tether's 1 MiB line with the
/// rest of the message. A voice message of Telegram's Opus (≈ 16–32 kbit/s) that size
/// lasts 3 to 6 minutes; a longer one goes through the workspace.
pub const MAX_RECORDING: u64 = 700 * 1024;

/// A recording to pass on.
#[derive(Debug, Clone, PartialEq)]
pub struct Spoken {
    /// For `getFile`.
    pub file_id: String,
    /// Its type, for the speech-to-text service.
    pub media_type: String,
    /// Length in seconds (0: unknown).
    pub duration: u64,
    /// What the message says when it has no caption: `[voice message, 12 s]`.
    pub label: String,
    /// Bytes, when Telegram says.
    pub size: Option<u64>,
    /// Its name in the inbox, should it be too large to pass inline (`voice-12.ogg`).
    pub file_name: String,
}

impl Spoken {
    /// Whether it is too large to travel inline, so it goes through the workspace.
    pub fn by_file(&self) -> bool {
        self.size.is_some_and(|s| s > MAX_RECORDING)
    }
}

/// What to do with a message's recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Pass it on.
    Pass(Spoken),
    /// Too large even for the workspace: the note for the model says so.
    LeftOut(String),
}

/// The recording of `m`, if it has one.
pub fn recorded(m: &Message) -> Option<Recorded> {
    let (r, kind, default_type, ext) = if let Some(r) = &m.voice {
        (r, "voice message", "audio/ogg", "ogg")
    } else if let Some(r) = &m.video_note {
        (r, "video message", "video/mp4", "mp4")
    } else if let Some(r) = &m.video {
        (r, "video", "video/mp4", "mp4")
    } else {
        (m.audio.as_ref()?, "audio file", "audio/mpeg", "mp3")
    };
    let label = label(kind, r);
    if r.file_size.is_some_and(|s| s > crate::inbox::MAX_FILE) {
        let size = r.file_size.unwrap_or_default().div_ceil(1024);
        return Some(Recorded::LeftOut(format!(
            "[{} not passed on: {size} KB, bots can fetch files of at most {} MB]",
            &label[1..label.len() - 1],
            crate::inbox::MAX_FILE / (1024 * 1024)
        )));
    }
    // An audio file keeps its own name; a recording is named after its message.
    let file_name = r
        .file_name
        .as_deref()
        .and_then(crate::inbox::clean_name)
        .unwrap_or_else(|| {
            let what = kind.split(' ').next().unwrap_or("recording");
            format!("{what}-{}.{ext}", m.message_id)
        });
    let media_type = r
        .mime_type
        .as_deref()
        .filter(|t| t.starts_with("audio/") || t.starts_with("video/"))
        .unwrap_or(default_type)
        .to_string();
    Some(Recorded::Pass(Spoken {
        file_id: r.file_id.clone(),
        media_type,
        duration: r.duration,
        label,
        size: r.file_size,
        file_name,
    }))
}

/// `[voice message, 12 s]`, `[audio file song.mp3, 3 min 5 s]`.
fn label(kind: &str, r: &Document) -> String {
    let what = match r.file_name.as_deref().and_then(crate::inbox::clean_name) {
        Some(name) => format!("{kind} {name}"),
        None => kind.to_string(),
    };
    match (r.duration / 60, r.duration % 60) {
        (0, 0) => format!("[{what}]"),
        (0, s) => format!("[{what}, {s} s]"),
        (m, 0) => format!("[{what}, {m} min]"),
        (m, s) => format!("[{what}, {m} min {s} s]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(extra: serde_json::Value) -> Message {
        let mut m = serde_json::json!({"message_id": 1, "chat": {"id": 5, "type": "private"}});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        serde_json::from_value(m).unwrap()
    }

    #[test]
    fn each_kind_of_recording_is_named_and_typed() {
        let voice = message(
            serde_json::json!({"voice": {"file_id": "v1", "file_unique_id": "u",
            "duration": 12, "mime_type": "audio/ogg", "file_size": 20_000}}),
        );
        assert_eq!(
            recorded(&voice),
            Some(Recorded::Pass(Spoken {
                file_id: "v1".into(),
                media_type: "audio/ogg".into(),
                duration: 12,
                label: "[voice message, 12 s]".into(),
                size: Some(20_000),
                file_name: "voice-1.ogg".into(),
            }))
        );
        let note = message(
            serde_json::json!({"video_note": {"file_id": "n1", "file_unique_id": "u",
            "length": 240, "duration": 60, "file_size": 300_000}}),
        );
        let Some(Recorded::Pass(s)) = recorded(&note) else {
            panic!()
        };
        assert_eq!(
            (s.media_type.as_str(), s.label.as_str()),
            ("video/mp4", "[video message, 1 min]")
        );
        let song = message(
            serde_json::json!({"audio": {"file_id": "a1", "file_unique_id": "u",
            "duration": 185, "file_name": "take]\n[2.mp3", "mime_type": "application/octet-stream"}}),
        );
        let Some(Recorded::Pass(s)) = recorded(&song) else {
            panic!()
        };
        assert_eq!(s.label, "[audio file take2.mp3, 3 min 5 s]");
        assert_eq!(s.file_name, "take2.mp3");
        assert_eq!(
            s.media_type, "audio/mpeg",
            "a type that is no audio is not trusted"
        );
        assert_eq!(recorded(&message(serde_json::json!({"text": "hi"}))), None);
    }

    #[test]
    fn a_recording_too_large_for_the_tether_goes_by_file_and_one_too_large_for_that_is_left_out() {
        let long = message(
            serde_json::json!({"voice": {"file_id": "v1", "file_unique_id": "u",
            "duration": 900, "file_size": 2_000_000}}),
        );
        let Some(Recorded::Pass(s)) = recorded(&long) else {
            panic!()
        };
        assert!(s.by_file());
        let huge = message(
            serde_json::json!({"video": {"file_id": "v1", "file_unique_id": "u",
            "duration": 3600, "file_size": 30_000_000}}),
        );
        assert_eq!(
            recorded(&huge),
            Some(Recorded::LeftOut(
                "[video, 60 min not passed on: 29297 KB, bots can fetch files of at most 20 MB]".into()
            ))
        );
    }
}
