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

/// How long a wait of `secs` seconds is, for people: `in 40 s`, `in 12 min`, `in 5 h 12
/// min`. Minutes are rounded up, so whoever comes back when told is not early.
pub fn wait_in_words(secs: u64) -> String {
    if secs < 60 {
        return format!("in {secs} s");
    }
    let minutes = secs.div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("in {m} min"),
        (h, 0) => format!("in {h} h"),
        (h, m) => format!("in {h} h {m} min"),
    }
}

/// How long something took, for people: `45 s`, `12 min 3 s`, `2 h`, `2 h 5 min`.
pub fn duration_in_words(secs: u64) -> String {
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn durations_are_said_in_two_units_at_most() {
        let said: Vec<String> = [0, 45, 60, 723, 3599, 3600, 7500]
            .into_iter()
            .map(duration_in_words)
            .collect();
        assert_eq!(
            said,
            [
                "0 s",
                "45 s",
                "1 min 0 s",
                "12 min 3 s",
                "59 min 59 s",
                "1 h",
                "2 h 5 min"
            ]
        );
    }

    #[test]
    fn waits_are_said_in_the_largest_units_rounded_up() {
        let said: Vec<String> = [0, 59, 60, 61, 719, 3600, 3601, 18_720, 86_400]
            .into_iter()
            .map(wait_in_words)
            .collect();
        assert_eq!(
            said,
            [
                "in 0 s",
                "in 59 s",
                "in 1 min",
                "in 2 min",
                "in 12 min",
                "in 1 h",
                "in 1 h 1 min",
                "in 5 h 12 min",
                "in 24 h"
            ]
        );
    }

    #[test]
    fn formats_with_millis_and_z() {
        let t = UNIX_EPOCH + Duration::from_millis(1_771_718_400_000);
        assert_eq!(rfc3339(t), "2026-02-22T00:00:00.000Z");
    }
}
