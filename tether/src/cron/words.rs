//! A schedule in plain words ("at 09:00, Monday to Friday"), so a chat's `/tasks` and the
//! model's `cron_create` say what a task does rather than only its expression: a model
//! that wrote `0 9 * * 0-4` for "weekdays" reads "Sunday to Thursday" back and can see
//! its mistake, and a user need not know cron. Also which schedules can never run
//! (`0 9 31 2 *`), which the agent refuses rather than keep a task that stays silent.
//!
//! The words follow the sets [`Schedule::parse`] made, including Unix cron's rule that
//! two restricted day fields mean either day ("on the 1st or on Mondays").

use super::Schedule;

/// Names of the days of the week, 0 = Sunday.
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Names of the months, 1 = January (0 unused).
const MONTHS: [&str; 13] = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days in each month in a leap year (0 unused): a day that exists in no year never comes.
const LONGEST_MONTH: [u8; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Times of day listed one by one, at most; more are said as a pattern.
const TIMES_LISTED: usize = 6;

/// The values of one field, as a pattern words can name.
#[derive(Debug, PartialEq)]
enum Shape {
    /// Every value of the field.
    Every,
    /// One value.
    One(u8),
    /// `from` to `to`, each one.
    Range(u8, u8),
    /// `from`, `from + step`, ... up to `to`: three values or more.
    Step { from: u8, step: u8, to: u8 },
    /// Anything else.
    List(Vec<u8>),
}

fn values(set: u64, lo: u8, hi: u8) -> Vec<u8> {
    (lo..=hi).filter(|v| set & (1u64 << v) != 0).collect()
}

fn shape(set: u64, lo: u8, hi: u8) -> Shape {
    let v = values(set, lo, hi);
    let first = v[0];
    let last = v[v.len() - 1];
    if v.len() == usize::from(hi - lo) + 1 {
        return Shape::Every;
    }
    if v.len() == 1 {
        return Shape::One(first);
    }
    let step = v[1] - v[0];
    if v.windows(2).all(|w| w[1] - w[0] == step) {
        if step == 1 {
            return Shape::Range(first, last);
        }
        if v.len() >= 3 {
            return Shape::Step {
                from: first,
                step,
                to: last,
            };
        }
    }
    Shape::List(v)
}

/// "a", "a and b", "a, b and c".
fn joined(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn ordinal(n: u8) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn clock(hour: u8, minute: u8) -> String {
    format!("{hour:02}:{minute:02}")
}

impl Schedule {
    fn minutes(&self) -> Vec<u8> {
        values(self.minute, 0, 59)
    }

    fn hours(&self) -> Vec<u8> {
        values(self.hour, 0, 23)
    }

    /// Whether the two day fields join with "or": both restricted as written. A field
    /// written from `*` (also `*/2`, as in every Unix cron) joins the other with "and".
    fn days_either(&self) -> bool {
        !self.dom_any && !self.dow_any
    }

    /// Whether no date of any year matches: a day of the month that none of the months
    /// has (`31 2`, `30 2`), where the day of the week cannot stand in for it.
    pub fn never_runs(&self) -> bool {
        if self.days_either() {
            return false;
        }
        let days = values(self.dom, 1, 31);
        !values(self.month, 1, 12)
            .into_iter()
            .any(|m| days.iter().any(|d| *d <= LONGEST_MONTH[usize::from(m)]))
    }

    /// The schedule in words: when in the day, on which days, in which months. Times are
    /// wall-clock times in the zone the host evaluates the schedule in.
    pub fn in_words(&self) -> String {
        let mut out = self.time_words();
        let days = self.day_words();
        if !days.is_empty() {
            out.push_str(", ");
            out.push_str(&days);
        } else if self.listed_times().is_some() {
            out.insert_str(0, "every day ");
        }
        out
    }

    /// Each time of day it runs, when there are few enough to list.
    fn listed_times(&self) -> Option<Vec<String>> {
        let (minutes, hours) = (self.minutes(), self.hours());
        (minutes.len() * hours.len() <= TIMES_LISTED).then(|| {
            hours
                .iter()
                .flat_map(|h| minutes.iter().map(move |m| clock(*h, *m)))
                .collect()
        })
    }

    fn time_words(&self) -> String {
        let minutes = self.minutes();
        let hours = self.hours();
        let m_shape = shape(self.minute, 0, 59);
        let h_shape = shape(self.hour, 0, 23);
        let per_hour = |at: &[u8]| -> String {
            match at {
                [0] => "on the hour".to_string(),
                _ => format!(
                    "at {}",
                    joined(&at.iter().map(|m| format!(":{m:02}")).collect::<Vec<_>>())
                ),
            }
        };
        // `*/N` of the minutes (N dividing the hour): every N minutes.
        let every_n = match m_shape {
            Shape::Every => Some(1),
            Shape::Step { from: 0, step, to } if 60 % step == 0 && to == 60 - step => Some(step),
            _ => None,
        };
        let every_n_words = |n: u8| match n {
            1 => "every minute".to_string(),
            n => format!("every {n} minutes"),
        };
        if let Some(times) = self.listed_times() {
            return format!("at {}", joined(&times));
        }
        match (&h_shape, every_n) {
            (Shape::Every, Some(n)) => return every_n_words(n),
            (Shape::Range(from, to), Some(n)) => {
                return format!(
                    "{} from {} to {}",
                    every_n_words(n),
                    clock(*from, 0),
                    clock(*to, 60 - n)
                )
            }
            (Shape::One(h), Some(n)) => {
                return format!(
                    "{} from {} to {}",
                    every_n_words(n),
                    clock(*h, 0),
                    clock(*h, 60 - n)
                )
            }
            _ => {}
        }
        let at = per_hour(&minutes);
        match h_shape {
            Shape::Every if minutes.len() <= 4 => format!("every hour {at}"),
            Shape::Range(from, to) if minutes.len() <= 4 => {
                format!(
                    "every hour {at}, from {} to {}",
                    clock(from, minutes[0]),
                    clock(to, minutes[minutes.len() - 1])
                )
            }
            Shape::Step { from, step, to } if minutes.len() <= 4 => format!(
                "every {step} hours {at}, from {} to {}",
                clock(from, minutes[0]),
                clock(to, minutes[minutes.len() - 1])
            ),
            _ => {
                let minute_words = match every_n {
                    Some(n) => every_n_words(n),
                    None => format!("at minutes {} of the hour", self.list_words(&m_shape)),
                };
                let hour_words = match h_shape {
                    Shape::Every => "every hour".to_string(),
                    _ => format!(
                        "in the hours starting {}",
                        joined(&hours.iter().map(|h| clock(*h, 0)).collect::<Vec<_>>())
                    ),
                };
                format!("{minute_words}, {hour_words}")
            }
        }
    }

    /// Numbers of a field that has no better words: "0 to 29", "5, 20 and 35", "every 7th
    /// from 3 to 59".
    fn list_words(&self, s: &Shape) -> String {
        match s {
            Shape::Every => "all".into(),
            Shape::One(v) => v.to_string(),
            Shape::Range(a, b) => format!("{a} to {b}"),
            Shape::Step { from, step, to } => format!("{from} to {to} every {step}"),
            Shape::List(v) => joined(&v.iter().map(u8::to_string).collect::<Vec<_>>()),
        }
    }

    fn day_words(&self) -> String {
        let dom = shape(self.dom, 1, 31);
        let dow = shape(self.dow, 0, 6);
        let month = shape(self.month, 1, 12);
        let months = month_words(&month);
        let dom_words = dom_words(&dom);
        let dow_words = dow_words(&dow);
        let with_months = |days: String| match &months {
            None => days,
            Some(m) => format!("{days}, {m}"),
        };
        match (dom_words, dow_words) {
            (None, None) => months.unwrap_or_default(),
            (Some(d), None) => match &month {
                Shape::Every => format!("{d} of every month"),
                _ => with_months(d),
            },
            (None, Some(w)) => with_months(w),
            (Some(d), Some(w)) if self.days_either() => with_months(format!("{d} or {w}")),
            (Some(d), Some(w)) => with_months(format!("{w} that fall {d}")),
        }
    }
}

fn dom_words(s: &Shape) -> Option<String> {
    let days = |v: &[u8]| joined(&v.iter().map(|d| ordinal(*d)).collect::<Vec<_>>());
    Some(match s {
        Shape::Every => return None,
        Shape::One(d) => format!("on the {}", ordinal(*d)),
        Shape::Range(a, b) => format!("on the {} to the {}", ordinal(*a), ordinal(*b)),
        Shape::Step {
            from: 1,
            step: 2,
            to: 31,
        } => "on odd days".into(),
        Shape::Step {
            from: 2,
            step: 2,
            to: 30,
        } => "on even days".into(),
        Shape::Step { from, step, to } if to + step > 31 => {
            format!("on every {} day from the {}", ordinal(*step), ordinal(*from))
        }
        Shape::Step { from, step, to } => format!(
            "on every {} day from the {} to the {}",
            ordinal(*step),
            ordinal(*from),
            ordinal(*to)
        ),
        Shape::List(v) => format!("on the {}", days(v)),
    })
}

fn dow_words(s: &Shape) -> Option<String> {
    let plural = |d: &u8| format!("{}s", DAYS[usize::from(*d)]);
    Some(match s {
        Shape::Every => return None,
        Shape::Range(1, 5) => "Monday to Friday".into(),
        Shape::List(v) if v[..] == [0, 6] => "on weekends".into(),
        Shape::One(d) => format!("on {}", plural(d)),
        Shape::Range(a, b) if b - a > 1 => {
            format!("{} to {}", DAYS[usize::from(*a)], DAYS[usize::from(*b)])
        }
        Shape::Range(..) | Shape::Step { .. } | Shape::List(_) => {
            let mut days: Vec<u8> = values_of(s);
            // A week read from Monday: Sunday last.
            days.sort_by_key(|d| (*d + 6) % 7);
            format!("on {}", joined(&days.iter().map(plural).collect::<Vec<_>>()))
        }
    })
}

fn month_words(s: &Shape) -> Option<String> {
    let name = |m: &u8| MONTHS[usize::from(*m)].to_string();
    Some(match s {
        Shape::Every => return None,
        Shape::One(m) => format!("in {}", name(m)),
        Shape::Range(a, b) => format!("from {} to {}", name(a), name(b)),
        Shape::Step { .. } | Shape::List(_) => {
            format!(
                "in {}",
                joined(&values_of(s).iter().map(name).collect::<Vec<_>>())
            )
        }
    })
}

/// The values of a stepped or listed shape.
fn values_of(s: &Shape) -> Vec<u8> {
    match s {
        Shape::Step { from, step, to } => (*from..=*to).step_by(usize::from(*step)).collect(),
        Shape::List(v) => v.clone(),
        Shape::One(v) => vec![*v],
        Shape::Range(a, b) => (*a..=*b).collect(),
        Shape::Every => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::Minute;
    use proptest::prelude::*;

    fn words(expr: &str) -> String {
        Schedule::parse(expr).unwrap().in_words()
    }

    #[test]
    fn common_schedules_read_as_people_say_them() {
        for (expr, said) in [
            ("* * * * *", "every minute"),
            ("*/5 * * * *", "every 5 minutes"),
            (
                "*/15 9-17 * * 1-5",
                "every 15 minutes from 09:00 to 17:45, Monday to Friday",
            ),
            ("0 9 * * *", "every day at 09:00"),
            ("30 8 * * 1-5", "at 08:30, Monday to Friday"),
            ("0 9 * * 0-4", "at 09:00, Sunday to Thursday"),
            ("0 10 * * 6,0", "at 10:00, on weekends"),
            ("0 10 * * 0,6", "at 10:00, on weekends"),
            ("0 18 * * 5", "at 18:00, on Fridays"),
            ("0 7 * * 7", "at 07:00, on Sundays"),
            ("0 7 * * 1,3,5", "at 07:00, on Mondays, Wednesdays and Fridays"),
            ("0 7 * * 0,1", "at 07:00, on Mondays and Sundays"),
            ("0 9,13,18 * * *", "every day at 09:00, 13:00 and 18:00"),
            ("15,45 8 * * *", "every day at 08:15 and 08:45"),
            ("0 * * * *", "every hour on the hour"),
            ("30 * * * *", "every hour at :30"),
            ("0,30 * * * *", "every hour at :00 and :30"),
            (
                "0 9-17 * * 1-5",
                "every hour on the hour, from 09:00 to 17:00, Monday to Friday",
            ),
            ("0 */2 * * *", "every 2 hours on the hour, from 00:00 to 22:00"),
            ("0 */6 * * *", "every day at 00:00, 06:00, 12:00 and 18:00"),
            ("30 8 1 * *", "at 08:30, on the 1st of every month"),
            ("0 9 1,15 * *", "at 09:00, on the 1st and 15th of every month"),
            ("0 9 22 * *", "at 09:00, on the 22nd of every month"),
            ("0 9 11 * *", "at 09:00, on the 11th of every month"),
            ("0 0 1 1 *", "at 00:00, on the 1st, in January"),
            ("0 12 25 12 *", "at 12:00, on the 25th, in December"),
            (
                "0 9 1 */3 *",
                "at 09:00, on the 1st, in January, April, July and October",
            ),
            ("0 9 * 3-10 1", "at 09:00, on Mondays, from March to October"),
            ("0 9 1 * 1", "at 09:00, on the 1st or on Mondays"),
            ("0 9 1-7 * 1", "at 09:00, on the 1st to the 7th or on Mondays"),
            ("0 9 */2 * 1", "at 09:00, on Mondays that fall on odd days"),
            ("0 9 */2 * *", "at 09:00, on odd days of every month"),
            ("0 9 2/2 * *", "at 09:00, on even days of every month"),
            (
                "0 9 1/10 * *",
                "at 09:00, on every 10th day from the 1st of every month",
            ),
            (
                "0 9 3-20/5 2 *",
                "at 09:00, on every 5th day from the 3rd to the 18th, in February",
            ),
            ("*/20 9 * * *", "every day at 09:00, 09:20 and 09:40"),
            ("* 9 * * *", "every minute from 09:00 to 09:59"),
            ("5/20 * * * *", "every hour at :05, :25 and :45"),
        ] {
            assert_eq!(words(expr), said, "{expr}");
        }
    }

    #[test]
    fn busy_schedules_still_say_every_time_they_run() {
        assert_eq!(
            words("*/10 9,12,18 * * *"),
            "every 10 minutes, in the hours starting 09:00, 12:00 and 18:00"
        );
        assert_eq!(
            words("0-29 * * * *"),
            "at minutes 0 to 29 of the hour, every hour"
        );
        assert_eq!(
            words("7,19,23,41,50 1,4,9 * * *"),
            "at minutes 7, 19, 23, 41 and 50 of the hour, in the hours starting 01:00, 04:00 and 09:00"
        );
    }

    #[test]
    fn a_date_no_year_has_never_runs() {
        for expr in [
            "0 9 31 2 *",
            "0 9 30 2 *",
            "0 9 31 4,6,9,11 *",
            "0 9 30-31 2 *",
            "0 9 31 2 */2",
        ] {
            let s = Schedule::parse(expr).unwrap();
            assert!(s.never_runs(), "{expr}");
        }
        for expr in [
            "0 9 29 2 *",
            "0 9 30-31 2 1-5",
            "0 9 31 2 1",
            "0 9 31 1-2 *",
            "0 9 * 2 *",
            "0 9 31 * *",
        ] {
            assert!(!Schedule::parse(expr).unwrap().never_runs(), "{expr}");
        }
    }

    /// The day of the week of a date (0 = Sunday), by Zeller's congruence's cousin.
    fn weekday(year: i32, month: u8, day: u8) -> u8 {
        let t = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
        let y = if month < 3 { year - 1 } else { year };
        ((y + y / 4 - y / 100 + y / 400 + t[usize::from(month - 1)] + i32::from(day)) % 7) as u8
    }

    fn days_in(year: i32, month: u8) -> u8 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// A field of values `lo` to `hi`, in each form the parser takes.
    fn field(lo: u8, hi: u8) -> impl Strategy<Value = String> {
        let v = move || lo..=hi;
        prop_oneof![
            Just("*".to_string()),
            v().prop_map(|n| n.to_string()),
            (v(), v()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1u8..13).prop_map(|s| format!("*/{s}")),
            (v(), v(), 1u8..9).prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
            (v(), v(), v()).prop_map(|(a, b, c)| format!("{a},{b},{c}")),
        ]
    }

    proptest! {
        #[test]
        fn every_schedule_has_words_and_never_runs_only_when_no_day_matches(
            m in field(0, 59), h in field(0, 23), dom in field(1, 31), mon in field(1, 12), dow in field(0, 7)
        ) {
            let expr = format!("{m} {h} {dom} {mon} {dow}");
            let Ok(s) = Schedule::parse(&expr) else { return Ok(()) };
            let said = s.in_words();
            prop_assert!(!said.is_empty() && said.len() < 400, "{expr}: {said}");
            // Every time it runs is named when there are few.
            let (mins, hrs) = (s.minutes(), s.hours());
            if mins.len() * hrs.len() <= TIMES_LISTED {
                for hr in &hrs {
                    for mi in &mins {
                        prop_assert!(said.contains(&clock(*hr, *mi)), "{expr}: {said}");
                    }
                }
            }
            // 28 years hold every date on every day of the week, 29 February included.
            let some_day = (2001..2029).any(|y| (1..=12u8).any(|mo| (1..=days_in(y, mo)).any(|d| {
                let at = Minute { minute: mins[0], hour: hrs[0], day: d, month: mo, weekday: weekday(y, mo, d) };
                s.matches(at)
            })));
            prop_assert_eq!(s.never_runs(), !some_day, "{}: {}", expr, said);
        }
    }
}
