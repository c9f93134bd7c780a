//! Tool calls of one round that only read (the workspace's files, memories, the web) run
//! at once: a model that asks for three pages waits for the slowest, not for the sum.
//! Each call gets a cancel of its own, all fired by the reply's; the outcomes come back
//! in the order of the calls, so the model reads them as it asked for them.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{bounded, select, Receiver};

use super::{Builtin, CallContext, Outcome, Toolbox};
use crate::llm::ToolCall;
use crate::memory::Here;
use crate::session::Document;
use tether::frame::Session;

/// Calls run at once at most (each `web_fetch` may hold 2 MiB while it reads).
pub const AT_ONCE: usize = 4;

/// The built-in tools whose calls may run together: they change nothing another call of
/// the round could read. Not Brave's searches: its free plan answers one request a
/// second, and two searches sent at once would have one refused where one after the other
/// both get through (see [`super::brave`]).
pub fn only_reads(b: Builtin) -> bool {
    matches!(
        b,
        Builtin::ReadFile
            | Builtin::ListFiles
            | Builtin::Glob
            | Builtin::Grep
            | Builtin::WebFetch
            | Builtin::MemorySearch
    )
}

/// How many of `calls`, from the first, run together: those `may` lets, at most
/// [`AT_ONCE`]. Fewer than two means the first runs alone.
pub fn leading(calls: &[ToolCall], may: impl Fn(&ToolCall) -> bool) -> usize {
    calls.iter().take(AT_ONCE).take_while(|c| may(c)).count()
}

/// What a batch came to: each call's outcome (and the documents shown with its result),
/// in order, and whether the reply was cancelled meanwhile (also when every call had
/// already finished).
pub struct Ran {
    /// One per call.
    pub outcomes: Vec<(Outcome, Vec<Document>)>,
    /// The reply's cancel arrived.
    pub cancelled: bool,
}

/// Run `calls` at once, each as [`Toolbox::run`] runs it for the reply `origin`, on behalf
/// of `on_behalf`, with memories of `here`. None of these tools asks the user anything.
pub fn run(
    tools: &Toolbox,
    calls: &[ToolCall],
    cancel: &Receiver<()>,
    origin: &Session,
    here: &Here,
    on_behalf: Option<&str>,
) -> Ran {
    let (fire, cancels): (Vec<_>, Vec<_>) = calls.iter().map(|_| bounded::<()>(1)).unzip();
    let fired = AtomicBool::new(false);
    let (finished, all_done) = bounded::<()>(0);
    let outcomes = std::thread::scope(|s| {
        let fired = &fired;
        let fan_out = std::thread::Builder::new()
            .name("cancel-fan".into())
            .stack_size(64 * 1024)
            .spawn_scoped(s, move || {
                select! {
                    recv(cancel) -> got => if got.is_ok() {
                        fired.store(true, Ordering::SeqCst);
                        for f in &fire {
                            let _ = f.try_send(());
                        }
                    },
                    recv(all_done) -> _ => {}
                }
            });
        let running: Vec<_> = calls
            .iter()
            .zip(cancels)
            .map(|(call, cancel)| {
                std::thread::Builder::new()
                    .name("tool".into())
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let mut ctx = CallContext {
                            cancel: &cancel,
                            origin,
                            here,
                            on_behalf,
                            attachments: Default::default(),
                            spent: Default::default(),
                            restart: false,
                            user: None,
                            shown: Vec::new(),
                        };
                        let outcome = tools.run(call, &mut ctx);
                        (outcome, ctx.shown)
                    })
            })
            .collect();
        let outcomes: Vec<(Outcome, Vec<Document>)> = running
            .into_iter()
            .map(|t| match t {
                Ok(t) => t
                    .join()
                    .unwrap_or_else(|_| (Outcome::Done("error: the tool failed".into()), Vec::new())),
                Err(e) => (
                    Outcome::Done(format!("error: cannot start the tool: {e}")),
                    Vec::new(),
                ),
            })
            .collect();
        drop(finished);
        if let Ok(t) = fan_out {
            let _ = t.join();
        }
        outcomes
    });
    Ran {
        outcomes,
        cancelled: fired.load(Ordering::SeqCst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(names: &[&str]) -> Vec<ToolCall> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| ToolCall {
                id: format!("c{i}"),
                name: n.to_string(),
                input: serde_json::json!({}),
            })
            .collect()
    }

    #[test]
    fn reads_run_together_up_to_the_cap_and_anything_else_alone() {
        let reads = |c: &ToolCall| c.name == "read";
        assert_eq!(leading(&calls(&["read"; 6]), reads), AT_ONCE);
        assert_eq!(leading(&calls(&["read", "read", "write", "read"]), reads), 2);
        assert_eq!(leading(&calls(&["write", "read", "read"]), reads), 0);
        assert_eq!(leading(&[], reads), 0);
        let together: Vec<Builtin> = Builtin::ALL.iter().copied().filter(|b| only_reads(*b)).collect();
        assert_eq!(
            together,
            [
                Builtin::ReadFile,
                Builtin::ListFiles,
                Builtin::Glob,
                Builtin::Grep,
                Builtin::WebFetch,
                Builtin::MemorySearch
            ],
            "nothing that writes, runs a command, asks, attaches to the reply or meets \
             a rate limit of one request a second"
        );
    }
}
