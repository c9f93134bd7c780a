//! Timestamps in the frame format: RFC 3339, UTC, milliseconds (`2026-02-22T00:00:00.000Z`).

use std::time::SystemTime;

/// The current time as a frame `ts`.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as a frame `ts`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_with_millis_and_z() {
        let t = UNIX_EPOCH + Duration::from_millis(1_771_718_400_000);
        assert_eq!(rfc3339(t), "2026-02-22T00:00:00.000Z");
    }
}
