//! A reply that puts a question to its user mid-way (an MCP server's `elicitation/create`,
//! [`crate::elicit`]): the question ends the reply so far (its `assistant.done`, with the
//! text the user has seen), the session's next message from the same user is the answer
//! (the router hands it over instead of queueing it, [`SessionState::waiting`]), and the
//! reply goes on as that message's reply. Any gateway shows this as it shows any reply:
//! nothing of it is new on the wire.
//!
//! No answer within [`crate::mcp::ASK_WAIT`], or `/stop`, ends the wait and the reply: with
//! no message to answer, nothing more is sent; the call's result says so, and the next
//! message finds it in the conversation.

use std::cell::RefCell;

use crossbeam_channel::{after, bounded, select, Receiver};
use tether::frame::{kind, Presence, UserMessage};
use tether::{Frame, Session};

use crate::elicit::{Heard, User};
use crate::tools::Attachments;
use crate::worker::{SessionState, Shared, Waiting};

/// The reply being written, as questions move it from message to message.
#[derive(Default)]
struct Target {
    /// The message it answers.
    msg_id: Option<String>,
    /// The text the user has seen of it so far (ends the next question's message).
    shown: String,
    /// Images and files the tools attached so far (go with the question's message).
    attached: Attachments,
    /// A question moved it since the caller last looked.
    moved: bool,
    /// A question went unanswered: the reply is over.
    ended: bool,
    /// What was asked and answered, for the call's result.
    heard: Vec<String>,
}

/// The user of a chat's reply, as a tool's call may ask them.
pub struct ChatAsker<'a> {
    shared: &'a Shared,
    state: &'a SessionState,
    out: &'a Session,
    /// Only this user's message answers (a group's other members' messages queue).
    user: Option<String>,
    cancel: &'a Receiver<()>,
    target: RefCell<Target>,
}

impl<'a> ChatAsker<'a> {
    /// For the reply to `msg_id` in `out` from `user`; `cancel` is the reply's.
    pub fn new(
        shared: &'a Shared,
        state: &'a SessionState,
        out: &'a Session,
        (msg_id, user): (Option<String>, Option<String>),
        cancel: &'a Receiver<()>,
    ) -> Self {
        ChatAsker {
            shared,
            state,
            out,
            user,
            cancel,
            target: RefCell::new(Target {
                msg_id,
                ..Target::default()
            }),
        }
    }

    /// The message the reply now answers.
    pub fn msg_id(&self) -> Option<String> {
        self.target.borrow().msg_id.clone()
    }

    /// What the user has seen of the reply, as of the next call.
    pub fn set_shown(&self, shown: &str) {
        shown.clone_into(&mut self.target.borrow_mut().shown);
    }

    /// Images and files a call attached, for the message that ends the reply (or the next
    /// question).
    pub fn attach(&self, mut more: Attachments) {
        self.target.borrow_mut().attached.append(&mut more);
    }

    /// What the tools attached and no message has carried yet.
    pub fn take_attachments(&self) -> Attachments {
        std::mem::take(&mut self.target.borrow_mut().attached)
    }

    /// Whether a question moved the reply to another message since the last look (what
    /// the user has seen then starts again from nothing), and what was asked and answered.
    pub fn take_moved(&self) -> Option<Vec<String>> {
        let mut t = self.target.borrow_mut();
        std::mem::take(&mut t.moved).then(|| std::mem::take(&mut t.heard))
    }

    /// Whether a question went unanswered, which ends the reply.
    pub fn ended(&self) -> bool {
        self.target.borrow().ended
    }

    /// Wait for the answer: the user's next message, a cancel, or the end of the wait.
    fn wait(&self, answers: &Receiver<Frame>) -> Result<Frame, Heard> {
        select! {
            recv(answers) -> f => f.map_err(|_| Heard::Silent),
            recv(self.cancel) -> _ => Err(Heard::Stopped),
            recv(after(crate::mcp::ASK_WAIT)) -> _ => Err(Heard::Silent),
        }
    }
}

impl User for ChatAsker<'_> {
    fn ask(&self, question: &str, picks: &[String]) -> Heard {
        self.put(question, picks, false)
    }

    fn ask_privately(&self, question: &str, picks: &[String]) -> Heard {
        self.put(question, picks, true)
    }
}

impl ChatAsker<'_> {
    /// Ask, and wait for the answer; a `private` one is not quoted in the call's result.
    fn put(&self, question: &str, picks: &[String], private: bool) -> Heard {
        let (tx, answers) = bounded(1);
        // Before the question goes out: a quick answer must not miss the desk.
        *self.state.waiting.lock().expect("waiting lock") = Some(Waiting {
            user: self.user.clone(),
            answer: tx,
        });
        let (msg_id, text, attached) = {
            let mut t = self.target.borrow_mut();
            let mut text = match t.shown.trim_end() {
                "" => question.to_string(),
                shown => format!("{shown}\n\n{question}"),
            };
            // A group's gateway may pass on only what is addressed to the bot (Telegram's
            // groups are negative ids).
            if self.out.id.starts_with('-') {
                text.push_str(" In a group, reply to this message to answer.");
            }
            (t.msg_id.clone(), text, std::mem::take(&mut t.attached))
        };
        let answerer = self.user.clone().filter(|_| !picks.is_empty());
        let question_ends = (attached, picks.to_vec(), answerer);
        crate::worker::send_done(self.shared, self.out, &msg_id, &text, question_ends);
        let got = self.wait(&answers);
        self.state.waiting.lock().expect("waiting lock").take();
        let frame = match got {
            Ok(f) => f,
            Err(why) => {
                log::info!(
                    "{}/{}: the question was not answered ({why:?})",
                    self.out.channel,
                    self.out.id
                );
                self.target.borrow_mut().ended = true;
                return why;
            }
        };
        let msg: UserMessage = frame.payload_as().unwrap_or_default();
        let said = match crate::worker::written_down(self.shared, self.out, &frame.msg_id, &msg, self.cancel)
        {
            Some(said) => said,
            None => {
                self.target.borrow_mut().ended = true;
                return Heard::Stopped;
            }
        };
        {
            let mut t = self.target.borrow_mut();
            t.msg_id = frame.msg_id.clone();
            t.shown.clear();
            t.moved = true;
            let asked = question
                .lines()
                .rev()
                .find(|l| l.starts_with(['❓', '🔗']))
                .unwrap_or("");
            let answered = match private {
                true => "(an answer that is not kept)".to_string(),
                false => format!("“{}”", crate::text::clip(&said, 500)),
            };
            t.heard.push(format!(
                "[asked in the chat: {asked} The user answered: {answered}]"
            ));
        }
        if let Some(f) = self.state.inflight.lock().expect("inflight lock").as_mut() {
            f.msg_id = frame.msg_id.clone();
        }
        // The reply begins again, as the answer's.
        let mut start =
            Frame::new(kind::STATUS_PRESENCE, Some(self.out.clone())).with_payload(&Presence::restart(""));
        start.msg_id = frame.msg_id.clone();
        let _ = self.shared.egress.send(start);
        Heard::Said(said)
    }
}

impl SessionState {
    /// `frame`, a user message of this session, handed to the question waiting for it;
    /// back when no question waits, or it is another user's.
    pub fn hand_answer(&self, frame: Frame) -> Option<Frame> {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let Some(w) = waiting.as_ref() else {
            return Some(frame);
        };
        if w.user.is_some() {
            let from = frame
                .payload_as::<UserMessage>()
                .ok()
                .and_then(|m| m.user)
                .and_then(|u| u.id);
            if from != w.user {
                return Some(frame);
            }
        }
        let w = waiting.take().expect("checked");
        w.answer.try_send(frame).err().map(|e| e.into_inner())
    }
}
