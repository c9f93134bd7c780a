//! [ours] How many messages each person may send the agent (`rate_limit` in
//! gateway.json): a bot open to everyone must not let one sender keep its instance awake
//! or spend its model's budget. Counted here, on the host, where the instance (and the
//! model in it) cannot reset the count, and before anything wakes the instance.
//!
//! Each rule is "at most `messages` in any `minutes`", a sliding window per Telegram user
//! across the bot's chats. What counts is what would reach the instance: a message or an
//! album, an edit answered again, a command the agent answers (`/usage`); the bot's own
//! commands (`/stop`, `/new`, `/start`, `/exec`), `/exec` lines and a tap on a question's
//! answer do not. A message over a rule is not passed on; its sender is told once per time
//! they are held back, and later ones in that time are dropped without a word, so a flood
//! gets no flood of answers. The counts live in the journal (`poll.json`): a restart
//! resets nothing, and a message handled again after a crash is counted once (by its
//! `update_id`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Rules at most in `rate_limit`.
pub const MAX_RULES: usize = 5;
/// The largest `messages` of a rule (each counted message is kept until its window ends).
pub const MAX_MESSAGES: u32 = 10_000;
/// The longest window of a rule: 30 days.
pub const MAX_MINUTES: u32 = 43_200;

/// Now, in the unix seconds the counts are kept in.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "At most `messages` in any `minutes`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub messages: u32,
    pub minutes: u32,
}

impl Rule {
    fn window(&self) -> u64 {
        u64::from(self.minutes) * 60
    }

    /// `in the last hour`, `in the last 10 minutes`, `in the last 2 days`.
    fn span(&self) -> String {
        let (n, unit) = match self.minutes {
            m if m % 1440 == 0 => (m / 1440, "day"),
            m if m % 60 == 0 => (m / 60, "hour"),
            m => (m, "minute"),
        };
        match n {
            1 => format!("in the last {unit}"),
            n => format!("in the last {n} {unit}s"),
        }
    }
}

/// A bot's `rate_limit`: no rules, no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub rules: Vec<Rule>,
    /// Users no rule holds back (`rate_limit_exempt`: the bot's owners).
    pub exempt: Vec<i64>,
}

/// One sender's counted messages, kept in the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// (unix seconds, `update_id`) of each counted message, oldest first; only those some
    /// window still holds.
    #[serde(default)]
    pub at: Vec<(u64, i64)>,
    /// When the sender was last told they were held back, the time they were told to
    /// come back: refusals before then are silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub told_until: Option<u64>,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on (it is counted).
    Pass,
    /// Hold it back, for `wait` seconds more, by `rule`; `tell` the sender (the first
    /// refusal since they could last send).
    Refuse { rule: Rule, wait: u64, tell: bool },
}

impl RateLimit {
    /// Whether any rule is set.
    pub fn any(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The longest window, in seconds.
    fn longest(&self) -> u64 {
        self.rules.iter().map(Rule::window).max().unwrap_or(0)
    }

    /// Whether a rule holds back `s`'s next message at `now`: for how long, by which
    /// rule. A rule holds while its window holds `messages` counted ones, until the oldest
    /// of those leaves it.
    fn hold(&self, s: &Sent, now: u64) -> Option<(u64, Rule)> {
        self.rules
            .iter()
            .filter_map(|r| {
                let n = r.messages as usize;
                let nth = s.at.len().checked_sub(n).map(|i| s.at[i].0)?;
                let leaves = nth.saturating_add(r.window());
                (leaves > now).then(|| (leaves - now, *r))
            })
            .max_by_key(|(wait, _)| *wait)
    }

    /// How many senders of `sent` are held back at `now` (`--check`).
    pub fn held(&self, sent: &BTreeMap<i64, Sent>, now: u64) -> usize {
        sent.iter()
            .filter(|(user, s)| !self.exempt.contains(user) && self.hold(s, now).is_some())
            .count()
    }

    /// The rules, for `--check`: `2 messages in 60 min, 50 in 1440 min per person (1
    /// exempt)`, or `none`.
    pub fn describe(&self) -> String {
        if !self.any() {
            return "none (every message is passed on)".into();
        }
        let rules: Vec<String> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| match i {
                0 => format!("{} messages in {} min", r.messages, r.minutes),
                _ => format!("{} in {} min", r.messages, r.minutes),
            })
            .collect();
        let exempt = match self.exempt.len() {
            0 => String::new(),
            n => format!(" ({n} exempt)"),
        };
        format!("{} per person{exempt}", rules.join(", "))
    }

    /// May `user` send the message of `update` at `now` (unix seconds)? A message to pass
    /// is counted in `sent`; one counted before (handled again after a crash) passes
    /// without being counted twice. Senders whose every message is out of every window
    /// are forgotten, so the journal keeps only who sent lately.
    pub fn admit(&self, sent: &mut BTreeMap<i64, Sent>, user: i64, update: i64, now: u64) -> Verdict {
        if !self.any() {
            sent.clear();
            return Verdict::Pass;
        }
        let longest = self.longest();
        // Oldest first: what left every window is a prefix, found by bisection, so a
        // message costs each recent sender a look at a few entries, not all of them.
        sent.retain(|_, s| {
            let gone = s.at.partition_point(|(t, _)| t.saturating_add(longest) <= now);
            s.at.drain(..gone);
            !s.at.is_empty() || s.told_until.is_some_and(|t| t > now)
        });
        if self.exempt.contains(&user) {
            return Verdict::Pass;
        }
        let mine = sent.entry(user).or_default();
        if mine.at.iter().any(|(_, id)| *id == update) {
            return Verdict::Pass;
        }
        let held = self.hold(mine, now);
        match held {
            None => {
                // Kept oldest first even if the clock steps back (pruning bisects).
                let at = mine.at.last().map_or(now, |(last, _)| now.max(*last));
                mine.at.push((at, update));
                // The largest rule needs no more than its count of messages.
                let keep = self.rules.iter().map(|r| r.messages as usize).max().unwrap_or(0);
                let excess = mine.at.len().saturating_sub(keep);
                mine.at.drain(..excess);
                Verdict::Pass
            }
            Some((wait, rule)) => {
                let tell = mine.told_until.is_none_or(|t| now >= t);
                if tell {
                    mine.told_until = Some(now + wait);
                }
                Verdict::Refuse { rule, wait, tell }
            }
        }
    }
}

/// What a sender held back by `rule` is told; `name` in a group, where "you" is not
/// clear.
pub fn refusal(rule: Rule, wait: u64, name: Option<&str>) -> String {
    let you = match name {
        Some(name) => format!("{name}, you have"),
        None => "You have".to_string(),
    };
    let messages = match rule.messages {
        1 => "1 message".to_string(),
        n => format!("{n} messages"),
    };
    format!(
        "⚠️ Not passed on: {you} sent {messages} {}, the most this bot takes. Send it again {}.",
        rule.span(),
        tether::time::wait_in_words(wait)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(rules: &[(u32, u32)]) -> RateLimit {
        RateLimit {
            rules: rules
                .iter()
                .map(|&(messages, minutes)| Rule { messages, minutes })
                .collect(),
            exempt: vec![99],
        }
    }

    #[test]
    fn a_sender_is_held_back_until_the_oldest_message_leaves_the_window() {
        let l = limit(&[(3, 10)]);
        let mut sent = BTreeMap::new();
        for (i, t) in [0, 100, 200].into_iter().enumerate() {
            assert_eq!(l.admit(&mut sent, 7, i as i64, t), Verdict::Pass);
        }
        let rule = l.rules[0];
        assert_eq!(
            l.admit(&mut sent, 7, 3, 300),
            Verdict::Refuse {
                rule,
                wait: 300,
                tell: true
            }
        );
        // Told once: the next refusals in that time are silent.
        assert_eq!(
            l.admit(&mut sent, 7, 4, 400),
            Verdict::Refuse {
                rule,
                wait: 200,
                tell: false
            }
        );
        // Another sender is not held back by the first one's count.
        assert_eq!(l.admit(&mut sent, 8, 5, 400), Verdict::Pass);
        // The first message left the window: one more passes, the next is held back and
        // told again (it could send since it was last told).
        assert_eq!(l.admit(&mut sent, 7, 6, 600), Verdict::Pass);
        assert_eq!(
            l.admit(&mut sent, 7, 7, 601),
            Verdict::Refuse {
                rule,
                wait: 99,
                tell: true
            }
        );
        // The owner is never held back.
        for id in 10..20 {
            assert_eq!(l.admit(&mut sent, 99, id, 601), Verdict::Pass);
        }
        assert!(!sent.contains_key(&99), "an exempt sender is not counted");
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_count_whole() {
        let l = limit(&[(2, 10)]);
        let mut sent = BTreeMap::new();
        assert_eq!(l.admit(&mut sent, 7, 1, 10_000), Verdict::Pass);
        // The clock steps back an hour: the message still counts, and the window still
        // holds both.
        assert_eq!(l.admit(&mut sent, 7, 2, 10_000 - 3_600), Verdict::Pass);
        assert!(matches!(l.admit(&mut sent, 7, 3, 10_001), Verdict::Refuse { .. }));
        assert_eq!(sent[&7].at.len(), 2);
    }

    #[test]
    fn a_message_handled_again_is_counted_once() {
        let l = limit(&[(2, 60)]);
        let mut sent = BTreeMap::new();
        assert_eq!(l.admit(&mut sent, 7, 41, 0), Verdict::Pass);
        assert_eq!(l.admit(&mut sent, 7, 41, 5), Verdict::Pass);
        assert_eq!(l.admit(&mut sent, 7, 42, 6), Verdict::Pass);
        assert!(matches!(l.admit(&mut sent, 7, 43, 7), Verdict::Refuse { .. }));
        // Both counted messages, handled again, still pass.
        assert_eq!(l.admit(&mut sent, 7, 42, 8), Verdict::Pass);
    }

    #[test]
    fn the_rule_that_holds_longest_is_named() {
        let l = limit(&[(2, 1), (3, 1440)]);
        let mut sent = BTreeMap::new();
        assert_eq!(l.admit(&mut sent, 7, 1, 0), Verdict::Pass);
        assert_eq!(l.admit(&mut sent, 7, 2, 1), Verdict::Pass);
        // The burst rule holds for 59 s more.
        assert_eq!(
            l.admit(&mut sent, 7, 3, 1),
            Verdict::Refuse {
                rule: l.rules[0],
                wait: 59,
                tell: true
            }
        );
        assert_eq!(l.admit(&mut sent, 7, 4, 120), Verdict::Pass);
        // Now the day's rule holds until the first message is a day old.
        assert_eq!(
            l.admit(&mut sent, 7, 5, 200),
            Verdict::Refuse {
                rule: l.rules[1],
                wait: 86_400 - 200,
                tell: true
            }
        );
    }

    #[test]
    fn senders_of_long_ago_are_forgotten_and_no_rule_keeps_nobody() {
        let l = limit(&[(5, 10)]);
        let mut sent = BTreeMap::new();
        assert_eq!(l.admit(&mut sent, 1, 1, 0), Verdict::Pass);
        assert_eq!(l.admit(&mut sent, 2, 2, 500), Verdict::Pass);
        assert_eq!(sent.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(l.admit(&mut sent, 2, 3, 650), Verdict::Pass);
        assert_eq!(
            sent.keys().copied().collect::<Vec<_>>(),
            [2],
            "user 1's message is 650 s old"
        );
        assert_eq!(RateLimit::default().admit(&mut sent, 2, 4, 700), Verdict::Pass);
        assert!(
            sent.is_empty(),
            "a limit taken out of the config leaves no counts behind"
        );
    }

    #[test]
    fn the_note_says_how_many_in_what_time_and_when_to_come_back() {
        let hour = Rule {
            messages: 20,
            minutes: 60,
        };
        assert_eq!(
            refusal(hour, 719, None),
            "⚠️ Not passed on: You have sent 20 messages in the last hour, the most this bot takes. Send it again in 12 min."
        );
        let one = Rule {
            messages: 1,
            minutes: 2880,
        };
        assert!(refusal(one, 30, Some("Ann")).contains("Ann, you have sent 1 message in the last 2 days,"));
        let minutes = Rule {
            messages: 5,
            minutes: 10,
        };
        assert!(refusal(minutes, 30, None).contains("in the last 10 minutes,"));
    }

    proptest! {
        /// Whatever the order and times of the messages, no window of a rule ever holds
        /// more counted messages than the rule allows, and a refusal's wait is exact: one
        /// second earlier the message is still held back, at its end it passes.
        #[test]
        fn no_window_ever_holds_more_than_its_rule(
            rules in proptest::collection::vec((1u32..5, 1u32..5), 1..3),
            steps in proptest::collection::vec((0u64..200, 0i64..3), 1..60),
        ) {
            let l = RateLimit { rules: rules.iter().map(|&(messages, minutes)| Rule { messages, minutes }).collect(), exempt: vec![] };
            let mut sent = BTreeMap::new();
            let mut passed: Vec<(u64, i64)> = Vec::new();
            let mut now = 0;
            for (i, (gap, user)) in steps.into_iter().enumerate() {
                now += gap;
                match l.admit(&mut sent, user, i as i64, now) {
                    Verdict::Pass => passed.push((now, user)),
                    Verdict::Refuse { wait, .. } => {
                        prop_assert!(wait > 0);
                        let mut later = sent.clone();
                        let retried = l.admit(&mut later, user, 10_000, now + wait - 1);
                        let held = matches!(retried, Verdict::Refuse { .. });
                        prop_assert!(held, "passed a second before its wait ended");
                        let mut later = sent.clone();
                        prop_assert_eq!(l.admit(&mut later, user, 10_000, now + wait), Verdict::Pass);
                    }
                }
                for r in &l.rules {
                    let held = passed
                        .iter()
                        .filter(|(t, u)| *u == user && t + r.window() > now)
                        .count();
                    prop_assert!(held <= r.messages as usize, "{held} in {r:?}");
                }
            }
        }
    }
}
