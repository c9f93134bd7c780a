//! [ours] When a one-time scheduled task runs (`cron.json` `at`): an instant, written in
//! UTC (`2026-12-03T08:00:00Z`), or a wall time in the tasks' time zone
//! (`2026-12-03T09:00`). The agent in the guest knows no time zones, so it turns what it
//! can (an offset, `Z`, "in 20 minutes") into an instant and leaves a wall time for the
//! host to place (`schedule::Tasks::due`), which knows the zone.

use std::fmt;

use crate::cron::ScheduleError;

/// A date and time of day, to the minute, in no particular zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Civil {
    /// 1970-9999.
    pub year: i32,
    /// 1-12.
    pub month: u8,
    /// 1-31, within the month.
    pub day: u8,
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
}

/// When a one-time task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Unix seconds.
    Instant(i64),
    /// A wall time in the tasks' time zone.
    Local(Civil),
}

impl At {
    /// Parse `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]]`, then `Z`, an offset (`+01:00`,
    /// `-0530`) or nothing (a wall time, kept to the minute). The error says what is wrong.
    pub fn parse(text: &str) -> Result<At, ScheduleError> {
        let err = |why: &str| {
            ScheduleError::new(format!(
                "{text:?}: {why}; expected a date and time like \"2026-12-03T09:00\" (the tasks' time zone), \
                 \"2026-12-03T08:00Z\" (UTC) or \"2026-12-03T09:00+01:00\""
            ))
        };
        let s = text.trim();
        let b = s.as_bytes();
        let digits = |from: usize, n: usize| -> Option<u32> {
            let part = b.get(from..from + n)?;
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
        };
        let shape_ok = b.len() >= 16
            && b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't' | b' ')
            && b[13] == b':';
        let (Some(year), Some(month), Some(day), Some(hour), Some(minute), true) = (
            digits(0, 4),
            digits(5, 2),
            digits(8, 2),
            digits(11, 2),
            digits(14, 2),
            shape_ok,
        ) else {
            return Err(err("not a date and time"));
        };
        let mut rest = &s[16..];
        let mut seconds = 0;
        if let Some(secs) = rest.strip_prefix(':') {
            let n = secs.bytes().take_while(u8::is_ascii_digit).count();
            seconds = match secs[..n].parse::<i64>() {
                Ok(v) if n == 2 && v <= 59 => v,
                _ => return Err(err("bad seconds")),
            };
            rest = &secs[2..];
            if let Some(frac) = rest.strip_prefix('.') {
                let n = frac.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(err("bad fraction of a second"));
                }
                rest = &frac[n..];
            }
        }
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || hour > 23 || minute > 59 {
            return Err(err("out of range"));
        }
        if day == 0 || day > days_in_month(year as i32, month as u8) {
            return Err(err("no such day"));
        }
        let civil = Civil {
            year: year as i32,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
        };
        let offset_minutes = match rest {
            "" => return Ok(At::Local(civil)),
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return Err(err("unexpected text after the time")),
                };
                let hm = rest[1..].replace(':', "");
                let ok = hm.len() == 4 && hm.bytes().all(|c| c.is_ascii_digit());
                let (h, m) = (
                    hm.get(..2).and_then(|v| v.parse::<i64>().ok()),
                    hm.get(2..).and_then(|v| v.parse::<i64>().ok()),
                );
                match (ok, h, m) {
                    (true, Some(h), Some(m)) if h <= 14 && m <= 59 => sign * (h * 60 + m),
                    _ => return Err(err("bad offset")),
                }
            }
        };
        Ok(At::Instant(
            civil.unix_seconds_as_utc() + seconds - offset_minutes * 60,
        ))
    }

    /// The unix minute of an instant; `None` for a wall time (the host places it).
    pub fn unix_minute(self) -> Option<i64> {
        match self {
            At::Instant(secs) => Some(secs.div_euclid(60)),
            At::Local(_) => None,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Instant(secs) => {
                let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
                let (y, m, d) = civil_from_days(days);
                let (h, mi, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
                write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
            }
            At::Local(c) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}",
                c.year, c.month, c.day, c.hour, c.minute
            ),
        }
    }
}

impl Civil {
    /// Unix seconds of this wall time read as UTC.
    pub fn unix_seconds_as_utc(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
    }
}

fn is_leap(y: i32) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i32, m: u8) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn instants_and_wall_times_are_told_apart() {
        // 2026-12-03T08:00:00Z = 1796284800.
        let utc = At::Instant(1_796_284_800);
        assert_eq!(At::parse("2026-12-03T08:00Z").unwrap(), utc);
        assert_eq!(At::parse("2026-12-03 08:00:00z").unwrap(), utc);
        assert_eq!(At::parse("2026-12-03T09:00:00.250+01:00").unwrap(), utc);
        assert_eq!(At::parse("2026-12-03T02:30-0530").unwrap(), utc);
        assert_eq!(utc.to_string(), "2026-12-03T08:00:00Z");
        assert_eq!(utc.unix_minute(), Some(1_796_284_800 / 60));
        let local = At::parse(" 2026-12-03T09:00 ").unwrap();
        assert_eq!(local.to_string(), "2026-12-03T09:00");
        assert_eq!(local.unix_minute(), None);
        assert_eq!(
            At::parse("2028-02-29T23:59").unwrap().to_string(),
            "2028-02-29T23:59"
        );
    }

    #[test]
    fn bad_times_say_what_is_wrong() {
        for (text, why) in [
            ("tomorrow at 9", "not a date and time"),
            ("2026-12-03", "not a date and time"),
            ("2026-13-03T09:00", "out of range"),
            ("2026-12-03T24:00", "out of range"),
            ("1969-12-31T23:59Z", "out of range"),
            ("2027-02-29T09:00", "no such day"),
            ("2026-04-31T09:00", "no such day"),
            ("2026-12-03T09:00:61", "bad seconds"),
            ("2026-12-03T09:00+15:00", "bad offset"),
            ("2026-12-03T09:00+1", "bad offset"),
            ("2026-12-03T09:00 CET", "unexpected text"),
            ("２026-12-03T09:00", "not a date and time"),
        ] {
            let e = At::parse(text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("2026-12-03T09:00"), "{text}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_instant_reads_back_as_itself(secs in 0i64..253_402_300_799) {
            let at = At::Instant(secs);
            prop_assert_eq!(At::parse(&at.to_string()).unwrap(), at);
        }

        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = At::parse(&text);
        }

        #[test]
        fn near_miss_shapes_never_panic(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{0,3}(\\.[0-9]{0,3})?)?([Zz]|[+-][0-9:]{0,6})?") {
            if let Ok(At::Instant(secs)) = At::parse(&text) {
                prop_assert!(secs >= -14 * 3600);
            }
        }
    }
}
