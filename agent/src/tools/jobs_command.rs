//! `/jobs` in a chat: the background jobs that run for it, and stopping one. Answered by
//! the agent without the model: a job holds the instance awake, and seeing or ending it
//! should cost nothing, past a daily limit too.

use tether::Session;

use super::jobs::Jobs;

/// Characters of a job's command in the list.
const COMMAND_SHOWN: usize = 100;
/// Characters of a job's last line of output in the list.
const LINE_SHOWN: usize = 120;

impl Jobs {
    /// The answer to `/jobs REST` in `chat`, at unix time `now`.
    pub fn command(&self, rest: &str, chat: &Session, now: u64) -> String {
        let mut words = rest.split_whitespace();
        match (
            words.next().map(str::to_ascii_lowercase).as_deref(),
            words.next(),
            words.next(),
        ) {
            (None, _, _) => self.listing(chat, now),
            (Some("stop" | "kill"), Some(id), None) => {
                let id = crate::text::full_id(id, "job-");
                match self.stop(&id, chat) {
                    Ok(()) => format!("⏹ Stopping {id}; the agent hears how it ended."),
                    Err(why) => format!("⚠️ {why}"),
                }
            }
            (Some("stop" | "kill"), _, _) => {
                "Name one job by its id, as /jobs lists them: `/jobs stop ID`.".into()
            }
            (Some(_), _, _) => "`/jobs` lists this chat's background jobs; `/jobs stop ID` stops one.".into(),
        }
    }

    fn listing(&self, chat: &Session, now: u64) -> String {
        let running = match self.running_in(chat) {
            Ok(r) => r,
            Err(why) => return format!("⚠️ The background jobs cannot be read: {why}"),
        };
        if running.is_empty() {
            return "No background jobs run for this chat. The agent starts one for a command that takes \
                    longer than a reply (a build, tests, a download) and tells you here when it ends."
                .into();
        }
        let mut out = "Background jobs of this chat (the instance stays awake while one runs):".to_string();
        for job in &running {
            out.push_str(&format!(
                "\n`{}` for {}: {}",
                job.id,
                tether::time::duration_in_words(now.saturating_sub(job.started)),
                crate::text::one_line(&job.command, COMMAND_SHOWN)
            ));
            if let Some(line) = &job.last_line {
                out.push_str(&format!(
                    "\n    last output: {}",
                    crate::text::one_line(line, LINE_SHOWN)
                ));
            }
        }
        out.push_str("\n`/jobs stop ID` stops one.");
        out
    }
}
