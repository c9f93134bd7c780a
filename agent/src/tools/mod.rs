//! The agent's tools: what is offered to the model and how a call is carried out.
//!
//! Built-in tools are named and shaped like upstream AegisVM's, so prompts and sessions
//! carry over: `bash` (shell.rs), `read_file`, `write_file`, `edit_file`, `list_files`
//! (files.rs), `glob`, `grep` (search.rs), `activate_skill` (ours; `crate::skills`),
//! `web_fetch` (web.rs), `web_search`,
//! `image_search` (brave.rs, offered when a Brave Search key is set), `image_generate`
//! (image_gen.rs, offered when an OpenAI key is set). MCP servers add theirs
//! as `SERVER_TOOL` (see `mcp.rs`). Every path a model names goes through
//! [`paths::Workspace::resolve`]. A failure is a text result starting with `error: ` for
//! the model, never a failed reply.

pub mod brave;
pub mod cron;
pub mod files;
pub mod guests;
pub mod image_gen;
pub mod jobs;
pub mod jobs_command;
pub mod paths;
pub mod reach;
pub mod retry;
pub mod search;
pub mod self_info;
pub mod shell;
pub mod speak;
pub mod startup;
pub mod tasks_command;
pub mod together;
pub mod web;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use serde_json::{json, Value};

use crate::llm::{ToolCall, ToolSpec};
use crate::mcp::McpServers;
use crate::memory::MemoryStore;
use crate::uplink::Uplink;
use paths::Workspace;
use tether::cut::{Armed, Cut};
use tether::Session;

/// The tool that loads a skill's instructions (its results are kept whole in the context).
pub const ACTIVATE_SKILL: &str = "activate_skill";

/// What running a tool call came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The text result for the model.
    Done(String),
    /// The reply was cancelled while the tool ran (its processes are gone).
    Cancelled,
}

/// A built-in tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Builtin {
    /// `bash {command}`.
    Bash,
    /// `read_file {path, start_line?, end_line?}`.
    ReadFile,
    /// `write_file {path, content}`.
    WriteFile,
    /// `edit_file {path, old_text|start_line, new_text, ...}`.
    EditFile,
    /// `list_files {path?}`.
    ListFiles,
    /// `glob {pattern, path?}`.
    Glob,
    /// `grep {pattern, path?, include?}`.
    Grep,
    /// `activate_skill {name}`.
    ActivateSkill,
    /// `web_fetch {url}`.
    WebFetch,
    /// `web_search {query, count?, freshness?}`.
    WebSearch,
    /// `image_search {query, count?}`.
    ImageSearch,
    /// `image_generate {prompt, size?}`.
    ImageGenerate,
    /// `respond_with_image {path}`.
    RespondWithImage,
    /// `respond_with_voice {text, instructions?}`.
    RespondWithVoice,
    /// `send_file {path}`.
    SendFile,
    /// `memory_store {text, tags?, scope?}`.
    MemoryStore,
    /// `memory_search {query?, tag?}`.
    MemorySearch,
    /// `memory_delete {id}`.
    MemoryDelete,
    /// `cron_create {schedule, text, session?, on_conflict?}`.
    CronCreate,
    /// `cron_list {}`.
    CronList,
    /// `cron_delete {id}`.
    CronDelete,
    /// `cron_enable {id}`.
    CronEnable,
    /// `cron_disable {id}`.
    CronDisable,
    /// `self_info {}`.
    SelfInfo,
    /// `self_restart {}`.
    SelfRestart,
}

impl Builtin {
    /// Every built-in, in the order they are offered.
    pub const ALL: [Builtin; 25] = [
        Builtin::Bash,
        Builtin::ReadFile,
        Builtin::WriteFile,
        Builtin::EditFile,
        Builtin::ListFiles,
        Builtin::Glob,
        Builtin::Grep,
        Builtin::ActivateSkill,
        Builtin::WebFetch,
        Builtin::WebSearch,
        Builtin::ImageSearch,
        Builtin::ImageGenerate,
        Builtin::RespondWithImage,
        Builtin::RespondWithVoice,
        Builtin::SendFile,
        Builtin::MemoryStore,
        Builtin::MemorySearch,
        Builtin::MemoryDelete,
        Builtin::CronCreate,
        Builtin::CronList,
        Builtin::CronDelete,
        Builtin::CronEnable,
        Builtin::CronDisable,
        Builtin::SelfInfo,
        Builtin::SelfRestart,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Bash => "bash",
            Builtin::ReadFile => "read_file",
            Builtin::WriteFile => "write_file",
            Builtin::EditFile => "edit_file",
            Builtin::ListFiles => "list_files",
            Builtin::Glob => "glob",
            Builtin::Grep => "grep",
            Builtin::ActivateSkill => ACTIVATE_SKILL,
            Builtin::WebFetch => "web_fetch",
            Builtin::WebSearch => "web_search",
            Builtin::ImageSearch => "image_search",
            Builtin::ImageGenerate => "image_generate",
            Builtin::RespondWithImage => "respond_with_image",
            Builtin::RespondWithVoice => "respond_with_voice",
            Builtin::SendFile => "send_file",
            Builtin::MemoryStore => "memory_store",
            Builtin::MemorySearch => "memory_search",
            Builtin::MemoryDelete => "memory_delete",
            Builtin::CronCreate => "cron_create",
            Builtin::CronList => "cron_list",
            Builtin::CronDelete => "cron_delete",
            Builtin::CronEnable => "cron_enable",
            Builtin::CronDisable => "cron_disable",
            Builtin::SelfInfo => "self_info",
            Builtin::SelfRestart => "self_restart",
        }
    }

    /// The group `AEGIS_TOOLS` can name it by.
    pub fn group(self) -> &'static str {
        match self {
            Builtin::Bash => "shell",
            Builtin::WebFetch
            | Builtin::WebSearch
            | Builtin::ImageSearch
            | Builtin::ImageGenerate
            | Builtin::RespondWithVoice => "web",
            Builtin::MemoryStore | Builtin::MemorySearch | Builtin::MemoryDelete => "memory",
            Builtin::CronCreate
            | Builtin::CronList
            | Builtin::CronDelete
            | Builtin::CronEnable
            | Builtin::CronDisable => "cron",
            Builtin::SelfInfo | Builtin::SelfRestart => "self",
            Builtin::ActivateSkill => "skills",
            _ => "files",
        }
    }

    fn spec(self) -> ToolSpec {
        let s = |d: &str| json!({"type": "string", "description": d});
        let n = |d: &str| json!({"type": "integer", "description": d});
        let (description, properties, required): (&str, Value, &[&str]) = match self {
            Builtin::Bash => (
                "Run a shell command (sh -c) in the workspace. Returns stdout, stderr and the exit status. Times out after 60 s by default; output is capped at 10,000 bytes. A server started with nohup CMD & stops when the idle instance does; to have it back at each start, also write an executable .aegis/startup/NAME.start that starts it in the background.",
                json!({"command": s("The shell command to run"), "background": {"type": "boolean", "description": "Run past the timeout (a build, tests, a download; not a server): a message in this chat tells you when it ends"}}),
                &["command"],
            ),
            Builtin::ReadFile => (
                "Read a file in the workspace (up to 50,000 bytes). With start_line/end_line, returns those lines numbered.",
                json!({"path": s("File path, relative to the workspace"), "start_line": n("First line (1-based)"), "end_line": n("Last line (1-based, inclusive)")}),
                &["path"],
            ),
            Builtin::WriteFile => (
                "Write a file in the workspace, creating parent folders. Content is written exactly as given (a JSON \\n is a newline).",
                json!({"path": s("File path, relative to the workspace"), "content": s("The whole new content")}),
                &["path", "content"],
            ),
            Builtin::EditFile => (
                "Edit a file in the workspace: replace old_text (must be unique unless occurrence is given) or the lines start_line..end_line with new_text. Returns a unified diff.",
                json!({"path": s("File path"), "old_text": s("Exact text to replace"), "new_text": s("Replacement text"), "start_line": n("First line to replace (1-based)"), "end_line": n("Last line to replace (inclusive)"), "occurrence": n("Which occurrence of old_text (1-based)")}),
                &["path", "new_text"],
            ),
            Builtin::ListFiles => (
                "List a folder of the workspace (default: its root). Folders end with /.",
                json!({"path": s("Folder path, relative to the workspace")}),
                &[],
            ),
            Builtin::Glob => (
                "Find files in the workspace by glob pattern; ** matches across folders (e.g. '**/*.py'). Up to 200 results.",
                json!({"pattern": s("Glob pattern, relative"), "path": s("Folder to search (default: the workspace)")}),
                &["pattern"],
            ),
            Builtin::Grep => (
                "Search file contents in the workspace with a regular expression. Up to 50 matches as file:line: text.",
                json!({"pattern": s("Regular expression"), "path": s("File or folder to search (default: the workspace)"), "include": s("Glob for file names, e.g. '*.rs'")}),
                &["pattern"],
            ),
            Builtin::ActivateSkill => (
                "Load a skill's instructions by its name, from the skills listed in the system prompt: call it before a task a skill's description matches. Returns the instructions, the skill's folder and the files in it.",
                json!({"name": s("The skill's name")}),
                &["name"],
            ),
            Builtin::WebFetch => (
                "Fetch an http(s) URL and return its text (HTML reduced to readable text), up to 10,000 characters.",
                json!({"url": s("URL starting with http:// or https://")}),
                &["url"],
            ),
            Builtin::WebSearch => (
                "Search the web (Brave Search). Returns JSON with the results' titles, URLs and descriptions; fetch a page with web_fetch to read it.",
                json!({"query": s("Search query"), "count": n("Number of results, 1-20 (default 5)"), "freshness": s("Only results from the last 'pd' (24 h), 'pw' (7 days), 'pm' (31 days), 'py' (a year), or 'YYYY-MM-DDtoYYYY-MM-DD'")}),
                &["query"],
            ),
            Builtin::ImageSearch => (
                "Search for images (Brave Search, safe search on). Returns JSON with each image's URL, thumbnail, source page and size. To send one: download it with bash (curl or wget) into the workspace, then respond_with_image.",
                json!({"query": s("Image search query"), "count": n("Number of results, 1-20 (default 5)")}),
                &["query"],
            ),
            Builtin::ImageGenerate => (
                "Generate an image from a text description (OpenAI Images API), or from images of the workspace (edit a photo, combine pictures). The image is attached to your reply and kept in the workspace; say in your text what you made.",
                json!({"prompt": s("What the image shows, in detail; with images, what to make of them"), "size": s("'1024x1024' (default), '1536x1024' (landscape) or '1024x1536' (portrait)"),
                    "images": {"type": "array", "items": {"type": "string"}, "description": "Workspace paths of PNG, JPEG or WebP images to make it from (a photo sent to you is in inbox/), at most 16"}}),
                &["prompt"],
            ),
            Builtin::RespondWithImage => (
                "Attach an image file of the workspace (.png, .jpg, .gif or .webp, at most 700 KB) to your reply; the user receives it with your text.",
                json!({"path": s("Image path, relative to the workspace")}),
                &["path"],
            ),
            Builtin::RespondWithVoice => (
                "Speak text as a voice message, sent after your reply's text (OpenAI text-to-speech): for a user who sent you a voice message or asks to hear the answer. Plain spoken words, no Markdown, lists or code; at most 4096 characters.",
                json!({"text": s("What to say"), "instructions": s("How to say it, e.g. 'calm and warm' or 'fast, excited'")}),
                &["text"],
            ),
            Builtin::SendFile => (
                "Send a file of the workspace to the user as a document, after your reply's text: a report, an archive, a script or data you made (any type, at most 50 MB). For a picture to look at, use respond_with_image.",
                json!({"path": s("File path, relative to the workspace")}),
                &["path"],
            ),
            Builtin::MemoryStore => (
                "Remember a stable fact for later conversations (at most 500 characters): something the user asked you to remember, or a lasting fact about the user or the work. Never store secrets, keys, tokens or passwords.",
                json!({"text": s("The fact to remember"), "tags": {"type": "array", "items": {"type": "string"}, "description": "Up to 5 labels"}, "scope": s("'workspace' (default; not for a guest's memories): recalled in every conversation; 'user' (a guest's default): about the person writing, recalled only where they write; 'session': this conversation only")}),
                &["text"],
            ),
            Builtin::MemorySearch => (
                "Search your memories by words in their text and/or a tag; newest first, up to 20. Without arguments, the 20 newest.",
                json!({"query": s("Text to look for (case-insensitive)"), "tag": s("Only memories with this tag")}),
                &[],
            ),
            Builtin::MemoryDelete => (
                "Forget a memory that is wrong or outdated.",
                json!({"id": s("Memory id, e.g. 'm-3'")}),
                &["id"],
            ),
            Builtin::CronCreate => (
                "Schedule a task: recurring (schedule) or once, such as a reminder (at, or in_minutes); give exactly one of the three. When it is due, text is sent to you as a message and your reply goes to this chat; a one-time task is deleted once it has run. At most 20 tasks. With id, that task is changed instead (its conversation goes on).",
                json!({
                    "schedule": s("Recurring: 5-field cron expression (minute hour day-of-month month day-of-week), e.g. '0 9 * * 1-5' for weekdays at 9:00, in the tasks' time zone"),
                    "at": s("Once, at this time: '2026-12-03T09:00' (the tasks' time zone), '2026-12-03T08:00Z' (UTC) or with an offset, '2026-12-03T09:00+01:00'"),
                    "in_minutes": {"type": "integer", "description": "Once, this many minutes from now (1 to 527040)"},
                    "text": s("What to do when it runs (at most 1000 characters)"),
                    "on_conflict": s("Recurring only. 'skip' (default): skip a run while the previous one is unanswered; 'queue': run anyway"),
                    "id": s("A task to change (e.g. 'cron-2'), given all its settings anew")
                }),
                &["text"],
            ),
            Builtin::CronList => ("List the scheduled tasks.", json!({}), &[]),
            Builtin::CronDelete => (
                "Delete a scheduled task.",
                json!({"id": s("Task id, e.g. 'cron-1'")}),
                &["id"],
            ),
            Builtin::CronEnable => (
                "Turn a scheduled task back on.",
                json!({"id": s("Task id")}),
                &["id"],
            ),
            Builtin::CronDisable => (
                "Pause a scheduled task without deleting it.",
                json!({"id": s("Task id")}),
                &["id"],
            ),
            Builtin::SelfInfo => (
                "Information about this instance from its host: id, handle (name), state, image, and the URLs of ports it exposes.",
                json!({}),
                &[],
            ),
            Builtin::SelfRestart => (
                "Restart this agent to load configuration you changed (.aegis/agent.json: MCP servers, tools, model; .aegis/mcp.json). Workspace files, sessions and memory are kept. The restart happens after this response; the user is told when the agent is back.",
                json!({}),
                &[],
            ),
        };
        ToolSpec {
            name: self.name().into(),
            description: description.into(),
            input_schema: json!({"type": "object", "properties": properties, "required": required}),
        }
    }
}

/// Which tools are on: agent.json may turn tools off, and `AEGIS_TOOLS` (if set) may
/// narrow the rest. A tool is on when both allow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Built-ins that are on.
    pub builtins: BTreeSet<Builtin>,
    /// MCP servers are attached.
    pub mcp: bool,
}

impl Selection {
    /// Everything on.
    pub fn all() -> Selection {
        Selection {
            builtins: Builtin::ALL.into_iter().collect(),
            mcp: true,
        }
    }

    /// Apply an `AEGIS_TOOLS` value: comma-separated `all`, `none`, tool names, groups
    /// (`shell`, `files`, `web`, `memory`, `cron`, `mcp`), each optionally prefixed with `-` to remove it.
    /// A list that starts with a plain name selects exactly what it names.
    pub fn narrow(&mut self, spec: &str) -> Result<(), String> {
        let items: Vec<&str> = spec.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let exact = items
            .first()
            .is_some_and(|f| !f.starts_with('-') && *f != "all" && *f != "none");
        let mut on: BTreeSet<Builtin> = if exact {
            BTreeSet::new()
        } else {
            Builtin::ALL.into()
        };
        let mut mcp = !exact;
        for item in items {
            let (add, name) = match item.strip_prefix('-') {
                Some(n) => (false, n),
                None => (true, item),
            };
            let set = |on: &mut BTreeSet<Builtin>, b: Builtin| {
                if add {
                    on.insert(b);
                } else {
                    on.remove(&b);
                }
            };
            match name {
                "all" | "none" => {
                    let everything = (name == "all") == add;
                    on = if everything {
                        Builtin::ALL.into()
                    } else {
                        BTreeSet::new()
                    };
                    mcp = everything;
                }
                "mcp" => mcp = add,
                other => {
                    let hits: Vec<Builtin> = Builtin::ALL
                        .into_iter()
                        .filter(|b| b.name() == other || b.group() == other)
                        .collect();
                    if hits.is_empty() {
                        return Err(format!(
                            "AEGIS_TOOLS: unknown tool or group {other:?} (groups: shell, files, skills, web, memory, cron, self, mcp; or all, none)"
                        ));
                    }
                    for b in hits {
                        set(&mut on, b);
                    }
                }
            }
        }
        self.builtins = self.builtins.intersection(&on).copied().collect();
        self.mcp &= mcp;
        Ok(())
    }
}

/// Settings of the tools.
#[derive(Debug, Clone)]
pub struct ToolConfig {
    /// What is on.
    pub selection: Selection,
    /// Longest `bash` run.
    pub bash_timeout: Duration,
    /// Longest run of a background job (`bash` with `background`).
    pub background_timeout: Duration,
    /// Variables `bash` must not see (the agent's own LLM key).
    pub hidden_env: Vec<String>,
    /// agent.json `timezone`, which the host evaluates schedules in.
    pub timezone: Option<String>,
    /// The variables holding the Brave Search key of `web_search` and of `image_search`.
    pub search_key_env: [String; 2],
    /// The variable holding the OpenAI key of `image_generate`, if it has one.
    pub image_key_env: Option<String>,
    /// The model `image_generate` asks for, when agent.json names one.
    pub image_model: Option<String>,
    /// The variable holding the OpenAI key of `respond_with_voice`, if it has one.
    pub speech_key_env: Option<String>,
    /// The model and the voice `respond_with_voice` asks for, when agent.json names them.
    pub speech_model: Option<String>,
    /// See `speech_model`.
    pub speech_voice: Option<String>,
    /// Folders of skills outside the workspace (`AEGIS_SKILLS_PATH`).
    pub skills_path: Vec<std::path::PathBuf>,
    /// The model searches with its provider's own tool: Brave's `web_search` is not
    /// offered (the name is the provider's tool's).
    pub native_search: bool,
    /// The sites `web_search` may show (Brave's results are filtered by it).
    pub search_scope: crate::search_scope::SearchScope,
    /// The sites `image_search`'s pictures may come from (`image_search`'s own lists, else
    /// `web_search`'s).
    pub image_scope: crate::search_scope::SearchScope,
    /// A chat may pick its model (`/model`, in the menu): an LLM provider is set.
    pub model_menu: bool,
    /// What `web_fetch` may reach besides the public internet (`AEGIS_WEB_PRIVATE_HOSTS`).
    pub web_reach: Arc<reach::Reach>,
    /// Who is trusted with every tool, and what the others get (`AEGIS_TRUSTED_USERS`,
    /// `AEGIS_GUEST_TOOLS`); `None`: everyone is trusted.
    pub guests: Option<guests::Guests>,
    /// `read_file` shows a PDF to the model whole: its server reads them (Anthropic's,
    /// OpenAI's, OpenRouter's), or agent.json `tools.read_file.pdf` says so.
    pub pdf: bool,
    /// `read_file` shows an image to the model, and so does an MCP tool that returns one:
    /// the same servers, or agent.json `tools.read_file.images`.
    pub images: bool,
}

/// What `b`'s description adds about the PDFs and images the model is shown ([`files::ModelSees`]).
fn shown_hint(b: Builtin, sees: files::ModelSees) -> &'static str {
    match (b, sees.pdf, sees.images) {
        (Builtin::ReadFile, true, true) => {
            " A PDF is shown to you whole, an image (PNG, JPEG, GIF, WebP) as a picture."
        }
        (Builtin::ReadFile, true, false) => " A PDF is shown to you whole.",
        (Builtin::ReadFile, false, true) => " An image (PNG, JPEG, GIF, WebP) is shown to you as a picture.",
        (Builtin::WebFetch, true, true) => " A PDF or an image is shown to you instead.",
        (Builtin::WebFetch, true, false) => " A PDF is shown to you whole instead.",
        (Builtin::WebFetch, false, true) => " An image is shown to you instead.",
        _ => "",
    }
}

/// The tools of one agent: built-ins over the workspace, plus MCP servers.
pub struct Toolbox {
    /// Where file tools may look.
    workspace: Workspace,
    /// Built-ins on offer, in offering order.
    builtins: Vec<Builtin>,
    /// `bash` settings.
    shell: shell::Shell,
    /// MCP servers (empty when MCP is off).
    mcp: Arc<McpServers>,
    /// Long-term memory.
    memory: Arc<MemoryStore>,
    /// Scheduled tasks.
    cron: cron::CronTools,
    /// Background jobs, once the agent has somewhere to tell their ends
    /// ([`Toolbox::run_jobs`]).
    jobs: Option<Arc<jobs::Jobs>>,
    /// Brave Search for `web_search` and for `image_search`, when their keys are set.
    search: [Option<brave::Brave>; 2],
    /// The Images API for `image_generate`, when its key is set.
    images: Option<image_gen::ImageGen>,
    /// The speech API for `respond_with_voice`, when its key (or server) is set.
    speech: Option<speak::Speaker>,
    /// The way to the host, for `self_info`.
    host: Uplink,
    /// The workspace's skills, for `activate_skill`.
    skills: crate::skills::Shelf,
    /// The command menu last told to the host ([`Toolbox::menu_changed`]).
    menu_told: std::sync::Mutex<Option<Vec<tether::frame::Command>>>,
    /// `/model` goes in the menu.
    model_menu: bool,
    /// What `web_fetch` may reach.
    web_reach: Arc<reach::Reach>,
    /// Who gets which tools.
    guests: Option<guests::Guests>,
    /// Which PDFs and images `read_file`, `web_fetch` and MCP tools show the model
    /// ([`ToolConfig::pdf`], [`ToolConfig::images`]).
    sees: files::ModelSees,
}

/// What tools attached to a reply, sent with its `assistant.done`.
#[derive(Debug, Default)]
pub struct Attachments {
    /// Images, shown as photos.
    pub images: Vec<tether::frame::Image>,
    /// Files, sent as documents after the images.
    pub files: Vec<tether::frame::FileRef>,
    /// Voice messages, sent after the files.
    pub voice: Vec<tether::frame::FileRef>,
}

impl Attachments {
    /// Whether nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.files.is_empty() && self.voice.is_empty()
    }

    /// Move everything of `other` to the end of these.
    pub fn append(&mut self, other: &mut Attachments) {
        self.images.append(&mut other.images);
        self.files.append(&mut other.files);
        self.voice.append(&mut other.voice);
    }
}

/// What a tool call may use and produce besides its arguments.
pub struct CallContext<'a> {
    /// A message here cancels the call.
    pub cancel: &'a Receiver<()>,
    /// The chat being answered (scheduled tasks reply there).
    pub origin: &'a Session,
    /// Where memories are kept and recalled.
    pub here: &'a crate::memory::Here,
    /// On whose behalf the reply acts (the sender, or a scheduled run's creator): a task
    /// it schedules is theirs.
    pub on_behalf: Option<&'a str>,
    /// Images and files attached to the reply.
    pub attachments: Attachments,
    /// Tokens a service counted for the call (an image made), for the chat's limits.
    pub spent: crate::usage::Tokens,
    /// `self_restart` was called: the agent restarts once the reply is done.
    pub restart: bool,
    /// Who answers an MCP server's questions during the call (a chat's user), if anyone.
    pub user: Option<&'a dyn crate::elicit::User>,
    /// Documents shown to the model with the call's result (a PDF `read_file` opened).
    pub shown: Vec<crate::session::Document>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("builtins", &self.builtins)
            .finish()
    }
}

impl Toolbox {
    /// Tools over `workspace` as `config` selects, with the MCP servers `mcp`; `host`
    /// answers `self_info`.
    pub fn new(
        workspace: Workspace,
        config: &ToolConfig,
        mcp: Arc<McpServers>,
        memory: Arc<MemoryStore>,
        host: Uplink,
        ledger: &Arc<crate::usage::Ledger>,
    ) -> Toolbox {
        // agent.json's sites are `web_search`'s.
        let [web, images] = config
            .search_key_env
            .clone()
            .map(|var| brave::Brave::from_env(&var));
        let search = [
            web.map(|b| b.within(config.search_scope.clone())),
            images.map(|b| b.within(config.image_scope.clone())),
        ];
        let images = config
            .image_key_env
            .as_deref()
            .and_then(|var| image_gen::ImageGen::from_env(var, config.image_model.as_deref()))
            .map(|g| g.with_ledger(Arc::clone(ledger)));
        let speech = speak::Speaker::from_env(
            config.speech_key_env.as_deref(),
            config.speech_model.as_deref(),
            config.speech_voice.as_deref(),
        )
        .map(|s| s.with_ledger(Arc::clone(ledger)));
        // A tool without its key is not offered: a model would only learn of the missing
        // key by calling it.
        let builtins = Builtin::ALL
            .into_iter()
            .filter(|b| config.selection.builtins.contains(b))
            .filter(|b| match b {
                Builtin::WebSearch => search[0].is_some() && !config.native_search,
                Builtin::ImageSearch => search[1].is_some(),
                Builtin::ImageGenerate => images.is_some(),
                Builtin::RespondWithVoice => speech.is_some(),
                _ => true,
            })
            .collect();
        Toolbox {
            search,
            images,
            speech,
            host,
            shell: shell::Shell {
                dir: workspace.root().to_path_buf(),
                timeout: config.bash_timeout,
                hidden_env: config.hidden_env.clone(),
            },
            cron: cron::CronTools::new(workspace.root(), config.timezone.as_deref()),
            jobs: None,
            skills: crate::skills::Shelf::new(workspace.clone(), config.skills_path.clone()),
            menu_told: std::sync::Mutex::new(None),
            model_menu: config.model_menu,
            web_reach: Arc::clone(&config.web_reach),
            guests: config.guests.clone(),
            sees: files::ModelSees {
                pdf: config.pdf,
                images: config.images,
            },
            workspace,
            builtins,
            mcp,
            memory,
        }
    }

    /// Show the model the images an MCP tool returned (a browser's screenshot), `saved`
    /// in the workspace: its result names each already.
    fn show_saved(&self, saved: Vec<(String, Vec<u8>)>, ctx: &mut CallContext) {
        for (at, bytes) in saved {
            let name = at.rsplit('/').next().unwrap_or(&at).to_string();
            let shown = match files::Visual::of(&bytes) {
                Some(kind @ files::Visual::Image(_)) if bytes.len() as u64 <= kind.cap() => {
                    files::document_of(&self.workspace, kind, name, &bytes)
                }
                _ => Err(format!("{at} is no image the model is shown (or over its size)")),
            };
            match shown {
                Ok(document) => ctx.shown.push(document),
                Err(why) => log::info!("an MCP tool's image not shown to the model: {why}"),
            }
        }
    }

    /// Names of the built-ins on offer.
    pub fn builtin_names(&self) -> Vec<&'static str> {
        self.builtins.iter().map(|b| b.name()).collect()
    }

    /// Whether any tool is on offer (MCP servers may still be starting).
    pub fn any(&self) -> bool {
        !self.builtins.is_empty() || !self.mcp.is_empty()
    }

    /// A run of a scheduled task has arrived (`msg_id`, a host's): a one-time task is done
    /// with and goes from the task file (the host never sends its run twice). A run a chat
    /// asked for is done with once answered ([`Toolbox::answered`]): the agent sends it
    /// again after a crash, and it must still be there then.
    pub fn task_ran(&self, msg_id: &str) {
        let Some(id) = tether::cron::task_of_msg_id(msg_id) else {
            return;
        };
        if tether::cron::is_run_now(msg_id) {
            return;
        }
        match self.cron.ran(id) {
            Ok(true) => log::info!("one-time task {id} ran; deleted"),
            Ok(false) => {}
            Err(e) => log::warn!("one-time task {id} ran, but stays listed: {e}"),
        }
    }

    /// Why chat `chat` cannot be written to, when the host's gateway said so (the user
    /// blocked the bot, a group removed it): a scheduled run replying there is not run.
    pub fn chat_gone(&self, chat: &Session) -> Option<String> {
        self.cron.chat_gone(chat)
    }

    /// Copy the photo kept as blob `blob` into `inbox/` for the tools; where it now is,
    /// relative to the workspace. `None` when no tool on offer could do anything with a
    /// picture's file (no shell, no file sending, no picture making, no MCP server): then
    /// nothing is copied.
    pub fn share_photo(&self, blob: &str) -> Option<Result<String, String>> {
        let useful = self.builtins.iter().any(|b| {
            matches!(
                b,
                Builtin::Bash | Builtin::SendFile | Builtin::RespondWithImage | Builtin::ImageGenerate
            )
        }) || !self.mcp.is_empty();
        if !useful {
            return None;
        }
        // The name is the content's: the same photo sent again finds its copy.
        let (hash, ext) = blob.split_once('.').unwrap_or((blob, "jpg"));
        let rel = format!("inbox/photo-{}.{ext}", &hash[..hash.len().min(12)]);
        let shared = self
            .workspace
            .resolve(&rel)
            .map_err(|e| e.to_string())
            .and_then(|dest| {
                crate::blobs::copy_to(self.workspace.root(), blob, &dest)
                    .map_err(|e| format!("{rel}: {e}"))?;
                crate::copies::kept(&dest, "photo-");
                Ok(())
            });
        Some(shared.map(|()| rel))
    }

    /// The tools to offer the model now in a reply that may use `allowed`: built-ins, then
    /// every MCP server's tools (this waits, boundedly, for servers still starting).
    pub fn specs_for(&self, allowed: &guests::Allowed) -> Vec<ToolSpec> {
        // `activate_skill` without a skill to name would only puzzle the model.
        let skills = self.skills.current().iter().any(|s| s.listed);
        let mut specs: Vec<ToolSpec> = allowed
            .builtins_of(&self.builtins)
            .filter(|&&b| b != Builtin::ActivateSkill || skills)
            .map(|&b| {
                let mut spec = b.spec();
                spec.description.push_str(shown_hint(b, self.sees));
                spec
            })
            .collect();
        if allowed.mcp() {
            specs.extend(self.mcp.specs());
        }
        specs
    }

    /// On whose behalf a reply acts: the sender of its message, or for a scheduled run
    /// (of `task`) the task's creator. Asked before a one-time task's run deletes it.
    pub fn acting_for(&self, sender: Option<&str>, task: Option<&str>) -> Option<String> {
        match task {
            Some(task) => self.cron.creator(task),
            None => sender.map(str::to_string),
        }
    }

    /// What a reply in chat `out` on behalf of `who` may use.
    pub fn allowed_for(&self, out: &Session, who: Option<&str>) -> guests::Allowed {
        match (&self.guests, who) {
            (None, _) => guests::Allowed::All,
            (Some(g), Some(user)) if g.trusts(&out.channel, user) => guests::Allowed::All,
            (Some(g), _) => guests::Allowed::Guest(g.tools.clone()),
        }
    }

    /// Whether calls of `name` may run at the same time as others of the same kind
    /// ([`together`]): a built-in tool that only reads. An MCP server's never do (one may
    /// ask the user, or act in ways the model orders).
    pub fn runs_together(&self, name: &str) -> bool {
        self.builtins
            .iter()
            .find(|b| b.name() == name)
            .is_some_and(|b| together::only_reads(*b))
    }

    /// Whether a call of tool `name` may run in a reply that may use `allowed`.
    pub fn permits(&self, name: &str, allowed: &guests::Allowed) -> bool {
        match self.builtins.iter().find(|b| b.name() == name) {
            Some(b) => allowed.builtin(*b),
            None => allowed.mcp(),
        }
    }

    /// What the MCP servers say about using their tools, for the end of the system prompt
    /// (see [`crate::mcp::McpServers::instructions`]); empty without any.
    pub fn mcp_instructions(&self) -> String {
        self.mcp.instructions()
    }

    /// Skills are on (`activate_skill` is: `/NAME`, the catalog and the menu go with it).
    fn skills_on(&self) -> bool {
        self.builtins.contains(&Builtin::ActivateSkill)
    }

    /// The skills catalog for the system prompt, the skills looked for again ("" without
    /// any, or with `activate_skill` off).
    pub fn skills_prompt(&self) -> String {
        if !self.skills_on() {
            return String::new();
        }
        crate::skills::catalog(&self.skills.refresh())
    }

    /// The answer to `/skills`: the skills and how to ask for one, or why there are none,
    /// then the MCP servers' prompts; `None` when cancelled while they were listed.
    pub fn skills_list(&self, cancel: &Receiver<()>) -> Option<String> {
        let skills = if self.skills_on() {
            crate::skills::listing(&self.skills.refresh())
        } else {
            "Skills are turned off for this agent (AEGIS_TOOLS or agent.json).".into()
        };
        let listed = self.mcp.prompts(cancel)?;
        let mut prompts = crate::mcp_prompts::listing(&listed.prompts);
        for name in listed.late {
            prompts.push_str(&format!(
                "\n(The MCP server {name} did not answer within {} s: its prompts as last listed.)",
                crate::mcp::LISTING_WAIT.as_secs()
            ));
        }
        Some(match prompts.trim_start() {
            "" => skills,
            prompts => format!("{skills}\n\n{prompts}"),
        })
    }

    /// Run background jobs (`bash` with `background`), each stopped after `timeout`, their
    /// ends sent on `tell` as messages, `keepalive` held while one runs.
    pub fn run_jobs(
        &mut self,
        timeout: Duration,
        tell: Sender<tether::Frame>,
        keepalive: crate::keepalive::Keepalive,
    ) {
        self.cron.send_runs_to(tell.clone());
        self.jobs = Some(jobs::Jobs::new(self.shell.clone(), timeout, tell, keepalive));
    }

    /// At the instance's start, where no harness does it: run the scripts that bring its
    /// services back ([`startup`]), when `bash` is on (they are the model's commands).
    pub fn run_startup(&self) {
        if self.builtins.contains(&Builtin::Bash) {
            startup::spawn(self.shell.clone());
        } else if startup::any_in(&self.shell.dir) {
            log::warn!(
                "startup: the scripts of {} are not run: the bash tool is off",
                startup::DIR
            );
        }
    }

    /// At the agent's start: tell the chats of jobs that ended (or were cut short) while
    /// it was not running (see [`jobs::Jobs::recover`]), and send again the tasks' runs
    /// asked for and not answered.
    pub fn recover_jobs(&self) {
        if let Some(jobs) = &self.jobs {
            jobs.recover();
        }
        self.cron.recover_runs();
    }

    /// The answer to `/jobs REST` in chat `out`, asked by someone who may use `allowed`:
    /// a job's command is the trusted users' to see, as `bash` is theirs to run.
    pub fn jobs_command(&self, rest: &str, out: &Session, allowed: &guests::Allowed) -> String {
        match &self.jobs {
            _ if *allowed != guests::Allowed::All => {
                "Background jobs are the agent's trusted users' to see and stop (AEGIS_TRUSTED_USERS).".into()
            }
            Some(jobs) if self.builtins.contains(&Builtin::Bash) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                jobs.command(rest, out, now)
            }
            _ => "This agent runs no background jobs (its bash tool is off).".into(),
        }
    }

    /// The ids of the background jobs that run.
    pub fn running_jobs(&self) -> Vec<String> {
        self.jobs.as_ref().map(|j| j.running()).unwrap_or_default()
    }

    /// The reply to message `msg_id` is done (a job's message, a task's run asked for
    /// now, are then forgotten).
    pub fn answered(&self, msg_id: &str) {
        if let Some(jobs) = &self.jobs {
            jobs.answered(msg_id);
        }
        if tether::cron::is_run_now(msg_id) {
            if let Err(e) = self.cron.run_answered(msg_id) {
                log::warn!("run {msg_id} answered, but its record stays: {e}");
            }
        }
    }

    /// The answer to `/tasks REST` in chat `out`, asked by `who` who may use `allowed`.
    pub fn tasks_command(
        &self,
        rest: &str,
        out: &Session,
        who: Option<&str>,
        allowed: &guests::Allowed,
    ) -> (String, Option<tasks_command::RunAsked>) {
        let asker = tasks_command::Asker {
            user: who,
            trusted: *allowed == guests::Allowed::All,
        };
        self.cron.command_then(rest, out, asker)
    }

    /// Queue a task's run `/tasks run` asked for, once its answer is sent.
    pub fn start_task_run(&self, run: tasks_command::RunAsked) {
        self.cron.start_run(run);
    }

    /// The answer to `/memory REST` in chat `out`, asked `here` by someone who may use
    /// `allowed`.
    pub fn memory_command(
        &self,
        rest: &str,
        out: &Session,
        here: &crate::memory::Here,
        allowed: &guests::Allowed,
    ) -> String {
        // A private chat's id is its person's (a topic's session id adds `:tN`).
        let chat = out.id.split(':').next();
        let asker = crate::memory_command::Asker {
            private: here.user.is_some() && here.user.as_deref() == chat,
            may_list: self.permits(Builtin::MemorySearch.name(), allowed),
            may_forget: self.permits(Builtin::MemoryDelete.name(), allowed),
        };
        self.memory.command(rest, here, asker)
    }

    /// The answer to `/mcp REST` (see [`crate::mcp::McpServers::command`]).
    pub fn mcp_command(&self, rest: &str, cancel: &Receiver<()>) -> String {
        self.mcp.command(rest, cancel)
    }

    /// What to tell the user of a message holding a sign-in's address no sign-in waits
    /// for (see [`crate::mcp::McpServers::late_sign_in`]).
    pub fn late_sign_in(&self, text: &str) -> Option<String> {
        self.mcp.late_sign_in(text)
    }

    /// For a message starting with `/SERVER_PROMPT` of an MCP server's prompt: that prompt
    /// run, `user` answering the server's questions (see
    /// [`crate::mcp::McpServers::prompt_asked`]).
    pub fn prompt_asked(
        &self,
        text: &str,
        cancel: &Receiver<()>,
        user: Option<&dyn crate::elicit::User>,
    ) -> Option<crate::mcp_prompts::Asked> {
        self.mcp.prompt_asked(text, cancel, user)
    }

    /// The commands the agent answers of its own, for the chat's menu: `/mcp` with MCP
    /// servers, its skills as the skills were last looked at, then its MCP servers' prompts as last listed; `Some`
    /// only when that differs from what was last told (every start tells it once).
    pub fn menu_changed(&self) -> Option<Vec<tether::frame::Command>> {
        let skills = if self.skills_on() {
            self.skills.current()
        } else {
            Arc::default()
        };
        // `/mcp` where there is a server to look at.
        let mcp = (!self.mcp.is_empty()).then(|| tether::frame::Command {
            command: "mcp".into(),
            description: "The MCP servers: which run, their tools, sign-ins".into(),
        });
        let model = self.model_menu.then(|| tether::frame::Command {
            command: "model".into(),
            description: "The model this chat talks to, and another to pick".into(),
        });
        let has = |b: Builtin| self.builtins.contains(&b);
        let tasks = has(Builtin::CronCreate).then(|| tether::frame::Command {
            command: "tasks".into(),
            description: "This chat's scheduled tasks, to run, pause or delete".into(),
        });
        let jobs = has(Builtin::Bash).then(|| tether::frame::Command {
            command: "jobs".into(),
            description: "Background jobs that run for this chat, to stop".into(),
        });
        let memory = has(Builtin::MemorySearch).then(|| tether::frame::Command {
            command: "memory".into(),
            description: "What the agent remembers here, to forget".into(),
        });
        let mut menu: Vec<tether::frame::Command> = model
            .into_iter()
            .chain(mcp)
            .chain(tasks)
            .chain(jobs)
            .chain(memory)
            .chain(
                skills
                    .iter()
                    .filter(|s| s.invocable)
                    .map(|s| tether::frame::Command {
                        command: s.name.to_lowercase().replace('-', "_"),
                        description: crate::skills::first_words(&s.description),
                    }),
            )
            .collect();
        menu.extend(
            self.mcp
                .prompts_seen()
                .into_iter()
                .map(|p| tether::frame::Command {
                    description: match p.description.as_str() {
                        "" => "A prompt of an MCP server".into(),
                        d => crate::skills::first_words(d),
                    },
                    command: p.command,
                }),
        );
        let mut told = self
            .menu_told
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if told.as_ref() == Some(&menu) {
            return None;
        }
        *told = Some(menu.clone());
        Some(menu)
    }

    /// The note telling the model which skills it loaded fell out of `budget`'s window of
    /// `history`, looking back one window's turns (see [`crate::skills::out_of_view`]); ""
    /// with skills off. The window is worked out only for a history where a skill was
    /// loaded.
    pub fn skills_out_of_view(
        &self,
        history: &[crate::session::Turn],
        budget: crate::context::Budget,
    ) -> String {
        let loaded = || {
            history
                .iter()
                .flat_map(|t| t.content.tool_uses())
                .any(|(_, tool, _)| tool == ACTIVATE_SKILL)
        };
        if !self.skills_on() || !loaded() {
            return String::new();
        }
        let (_, fell_out) = crate::context::window(history, budget);
        crate::skills::out_of_view(history, fell_out, budget.turns, &self.skills.current())
    }

    /// For a message starting with `/NAME` of a skill: that skill's instructions, for the
    /// model to read with the message (or why they could not be read).
    pub fn skill_asked(&self, text: &str) -> Option<String> {
        if !self.skills_on() {
            return None;
        }
        let skill = self.skills.asked(text)?;
        log::info!("the message asks for the skill {}", skill.name);
        Some(match self.skills.activate(&skill.name, true) {
            Ok(content) => format!(
                "[The user asks for the skill {}: its instructions follow.]\n{content}",
                skill.name
            ),
            Err(e) => format!(
                "[The user asks for the skill {}, which could not be read: {e}]",
                skill.name
            ),
        })
    }

    /// Carry out `call`; a cancel on `ctx.cancel` ends it early.
    pub fn run(&self, call: &ToolCall, ctx: &mut CallContext) -> Outcome {
        let cancel = ctx.cancel;
        let args = &call.input;
        if !args.is_object() {
            return Outcome::Done(format!(
                "error: the arguments of {} must be a JSON object, got: {}",
                call.name,
                cap_text(args.to_string(), 200, args.to_string().len())
            ));
        }
        let Some(builtin) = self.builtins.iter().find(|b| b.name() == call.name) else {
            let saved = crate::mcp::Saved::default();
            return match self.mcp.call(&call.name, args, cancel, ctx.user, &saved) {
                Some(outcome) => {
                    if self.sees.images {
                        self.show_saved(saved.into_inner(), ctx);
                    }
                    outcome
                }
                None => Outcome::Done(format!("error: unknown tool {:?}", call.name)),
            };
        };
        let ws = &self.workspace;
        let result = match builtin {
            Builtin::Bash => {
                let background = args.get("background").and_then(Value::as_bool) == Some(true);
                return match (arg_str(args, "command"), &self.jobs) {
                    (Err(e), _) => Outcome::Done(format!("error: {e}")),
                    (Ok(c), Some(jobs)) if background => Outcome::Done(
                        jobs.start(c, ctx.origin, ctx.on_behalf)
                            .unwrap_or_else(|e| format!("error: {e}")),
                    ),
                    (Ok(_), None) if background => {
                        Outcome::Done("error: background jobs are not available in this agent".into())
                    }
                    (Ok(c), _) => self.shell.run(c, cancel),
                };
            }
            Builtin::ReadFile => match files::visual_at(ws, args) {
                Some((path, kind)) if self.sees.sees(kind) => {
                    files::show(ws, &path, kind).map(|(document, text)| {
                        ctx.shown.push(document);
                        text
                    })
                }
                Some((path, kind)) => Err(files::not_shown(ws, &path, kind)),
                None => files::read_file(ws, args),
            },
            Builtin::WriteFile => files::write_file(ws, args),
            Builtin::EditFile => files::edit_file(ws, args),
            Builtin::ListFiles => files::list_files(ws, args),
            Builtin::Glob => search::glob(ws, args),
            Builtin::Grep => search::grep(ws, args),
            Builtin::ActivateSkill => arg_str(args, "name").and_then(|n| self.skills.activate(n, false)),
            Builtin::WebFetch => {
                let reach = Arc::clone(&self.web_reach);
                let sees = self.sees;
                let fetched = off_thread(args.clone(), cancel, move |args, abandoned| {
                    web::fetch(args, abandoned, &reach, |kind| sees.sees(kind))
                });
                let Some(fetched) = fetched else {
                    return Outcome::Cancelled;
                };
                fetched.and_then(|(text, got)| {
                    if let Some(got) = got {
                        ctx.shown
                            .push(files::document_of(ws, got.kind, got.name, &got.bytes)?);
                    }
                    Ok(text)
                })
            }
            Builtin::WebSearch | Builtin::ImageSearch => {
                let images = *builtin == Builtin::ImageSearch;
                let Some(brave) = self.search[usize::from(images)].clone() else {
                    return Outcome::Done("error: no Brave Search key is set".into());
                };
                return cancellable(args.clone(), cancel, move |a, abandoned| {
                    if images {
                        brave.images(a, abandoned)
                    } else {
                        brave.web(a, abandoned)
                    }
                });
            }
            Builtin::ImageGenerate => {
                let Some(images) = self.images.clone() else {
                    return Outcome::Done("error: no OpenAI key is set for image_generate".into());
                };
                let inputs = match files::edit_inputs(ws, args, images.input_field()) {
                    Ok(inputs) => inputs,
                    Err(e) => return Outcome::Done(format!("error: {e}")),
                };
                let root = ws.root().to_path_buf();
                let made = off_thread(args.clone(), cancel, move |a, abandoned| {
                    images.generate(&root, a, &inputs, abandoned)
                });
                let Some(made) = made else {
                    return Outcome::Cancelled;
                };
                attach(counted(made, &mut ctx.spent), |img| {
                    ctx.attachments.images.push(img)
                })
            }
            Builtin::RespondWithImage => attach(files::attach_image(ws, args), |img| {
                ctx.attachments.images.push(img)
            }),
            Builtin::RespondWithVoice => {
                let Some(speech) = self.speech.clone() else {
                    return Outcome::Done("error: no OpenAI key is set for respond_with_voice".into());
                };
                let root = ws.root().to_path_buf();
                let made = off_thread(args.clone(), cancel, move |a, abandoned| {
                    speech.speak(&root, a, abandoned)
                });
                let Some(made) = made else {
                    return Outcome::Cancelled;
                };
                attach(counted(made, &mut ctx.spent), |voice| {
                    ctx.attachments.voice.push(voice)
                })
            }
            Builtin::SendFile => attach(files::attach_file(ws, args), |file| {
                ctx.attachments.files.push(file)
            }),
            Builtin::MemoryStore => self.memory_store(args, ctx.here),
            Builtin::MemorySearch => self.memory_search(args, ctx.here),
            Builtin::MemoryDelete => arg_str(args, "id")
                .and_then(|id| self.memory.delete(id, ctx.here))
                .map(|()| json!({"ok": true}).to_string()),
            Builtin::CronCreate => self.cron.create(args, ctx.origin, ctx.on_behalf),
            Builtin::CronList => self.cron.list(),
            Builtin::CronDelete => self.cron.delete(args),
            Builtin::CronEnable => self.cron.set_enabled(args, true),
            Builtin::CronDisable => self.cron.set_enabled(args, false),
            Builtin::SelfInfo => {
                let host = self.host.clone();
                return cancellable(args.clone(), cancel, move |_, _| self_info::fetch(&host));
            }
            Builtin::SelfRestart => {
                ctx.restart = true;
                Ok(json!({"ok": true, "message": "Restart scheduled. It will happen after this response completes."}).to_string())
            }
        };
        Outcome::Done(match result {
            Ok(text) => text,
            Err(e) => format!("error: {e}"),
        })
    }
}

impl Toolbox {
    fn memory_store(&self, args: &Value, here: &crate::memory::Here) -> Result<String, String> {
        let text = arg_str(args, "text")?;
        let tags: Vec<String> = match args.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| t.as_str().map(str::to_string).ok_or("tags must be strings"))
                .collect::<Result<_, _>>()?,
            Some(Value::String(t)) => vec![t.clone()],
            Some(other) => return Err(format!("tags must be a list of strings, got {other}")),
        };
        let id = self.memory.store(text, &tags, arg_opt(args, "scope")?, here)?;
        Ok(json!({"ok": true, "id": id}).to_string())
    }

    fn memory_search(&self, args: &Value, here: &crate::memory::Here) -> Result<String, String> {
        let found = self
            .memory
            .search(arg_opt(args, "query")?, arg_opt(args, "tag")?, here)?;
        Ok(crate::memory::search_result(&found))
    }
}

/// An optional string argument.
pub fn arg_opt<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{name} must be a string, got {other}")),
    }
}

/// Run `f` on a thread of its own so a cancel does not wait for it.
fn cancellable(
    args: Value,
    cancel: &Receiver<()>,
    f: impl FnOnce(&Value, &Abandoned) -> Result<String, String> + Send + 'static,
) -> Outcome {
    match off_thread(args, cancel, f) {
        Some(Ok(text)) => Outcome::Done(text),
        Some(Err(e)) => Outcome::Done(format!("error: {e}")),
        None => Outcome::Cancelled,
    }
}

/// The note of what a tool made (an image, a recording, a file), once `to_reply` has put
/// it on the reply.
fn attach<T>(made: Result<(T, String), String>, to_reply: impl FnOnce(T)) -> Result<String, String> {
    made.map(|(thing, note)| {
        to_reply(thing);
        note
    })
}

/// What a paid service made, its tokens added to `spent` (the chat's daily limits).
fn counted<T>(
    made: Result<(T, String, crate::usage::Tokens), String>,
    spent: &mut crate::usage::Tokens,
) -> Result<(T, String), String> {
    made.map(|(thing, note, tokens)| {
        spent.add(&tokens);
        (thing, note)
    })
}

/// Tells a tool running on a thread of its own that nobody waits for its result any more
/// (the reply was cancelled), so it starts no further request (a retried image generation
/// would be paid for and never seen), and closes the connections of the requests it has
/// in flight.
pub struct Abandoned {
    gone: Receiver<()>,
    cut: Cut,
}

impl Abandoned {
    /// Sleep `d`; false, at once, when the call was abandoned meanwhile.
    pub fn wait(&self, d: Duration) -> bool {
        // Nothing is ever sent: the sender's end is dropped when the caller stops waiting.
        self.gone.recv_timeout(d) == Err(crossbeam_channel::RecvTimeoutError::Timeout)
    }

    /// Requests on `agent` end the moment the call is abandoned, until the guard drops:
    /// a model waiting minutes for an image must not keep the server drawing it. An error
    /// when the call is abandoned already.
    pub fn arm(&self, agent: &ureq::Agent) -> Result<Armed, String> {
        self.cut.arm(agent).ok_or_else(|| "cancelled".to_string())
    }

    /// A call nobody abandons (unit tests).
    #[cfg(test)]
    pub fn never() -> Abandoned {
        Abandoned {
            gone: crossbeam_channel::never(),
            cut: Cut::new(),
        }
    }
}

/// `f(args)` run on a thread of its own; `None` when `cancel` came first (the thread
/// finishes on its own, told by its `Abandoned`, and its result is dropped).
fn off_thread<T: Send + 'static>(
    args: Value,
    cancel: &Receiver<()>,
    f: impl FnOnce(&Value, &Abandoned) -> Result<T, String> + Send + 'static,
) -> Option<Result<T, String>> {
    let (tx, rx) = bounded(1);
    let (_waiting, gone) = bounded::<()>(0);
    let cut = Cut::new();
    let abandoned = Abandoned {
        gone,
        cut: cut.clone(),
    };
    let spawned = thread::Builder::new()
        .name("tool".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = tx.send(f(&args, &abandoned));
        });
    if let Err(e) = spawned {
        return Some(Err(format!("cannot start the tool: {e}")));
    }
    select! {
        recv(rx) -> r => Some(r.unwrap_or_else(|_| Err("the tool stopped unexpectedly".into()))),
        recv(cancel) -> _ => {
            cut.fire();
            None
        }
    }
}

/// A web API's key (variable `key_env`) and base URL (variable `base_env`, else
/// `default`, without a trailing `/`); `None` when the key is unset or empty.
pub fn api_from_env(key_env: &str, base_env: &str, default: &str) -> Option<(String, String)> {
    let set = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let key = set(key_env)?.trim().to_string();
    let base = set(base_env).unwrap_or_else(|| default.to_string());
    Some((key, base.trim().trim_end_matches('/').to_string()))
}

/// A client for calls to a web API at `url`: a status comes back as an answer (the caller
/// reads the API's error body), 10 s to connect, `timeout` for the whole call.
pub fn api_agent(url: &str, timeout: Duration) -> ureq::Agent {
    api_config(url, timeout).into()
}

/// The settings of [`api_agent`], for clients that make agents of their own.
pub fn api_config(url: &str, timeout: Duration) -> ureq::config::Config {
    tether::http::agent_config(url)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(timeout))
        .user_agent(concat!("aegis-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The JSON of a web API's answer (`api`, as "the search API"), read up to `limit` bytes;
/// `what` names the answer in an error ("the search results").
pub fn json_answer(
    resp: ureq::http::Response<ureq::Body>,
    limit: u64,
    what: &str,
    api: &str,
) -> Result<Value, String> {
    let text = resp
        .into_body()
        .into_with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|e| format!("reading {what} failed: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{api} answered something else than JSON: {e}"))
}

/// A web API's refusal for the model: `what` it means, with the API's own words when it
/// gave them (`the search API rejected the key (HTTP 401: ...)`).
pub fn refusal(what: &str, status: u16, detail: &str) -> String {
    if detail.is_empty() {
        format!("{what} (HTTP {status})")
    } else {
        format!("{what} (HTTP {status}: {detail})")
    }
}

/// A transport error of a web API call, without anything of the request (ureq's messages
/// carry no headers, where keys travel).
pub fn transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "no answer in time".into(),
        other => other.to_string(),
    }
}

/// A required string argument.
pub fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("{name} is required")),
        Some(other) => Err(format!("{name} must be a string, got {other}")),
    }
}

/// An optional non-negative integer argument (numbers written as strings are accepted).
pub fn arg_usize(args: &Value, name: &str) -> Result<Option<usize>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("{name} must be a whole number >= 0")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a whole number, got {s:?}")),
        Some(other) => Err(format!("{name} must be a whole number, got {other}")),
    }
}

/// `text` cut to at most `cap` bytes (on a character boundary), with a note saying how
/// much there was when anything was left out. `total` is the size of the whole output
/// (it may be more than `text` already holds).
pub fn cap_text(mut text: String, cap: usize, total: usize) -> String {
    let total = total.max(text.len());
    if total <= cap {
        return text;
    }
    let mut end = cap.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("\n... (truncated: {total} bytes in all)"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aegis_tools_narrows_by_names_groups_and_removals() {
        let names = |s: &Selection| s.builtins.iter().map(|b| b.name()).collect::<Vec<_>>();
        let mut s = Selection::all();
        s.narrow("all,-shell,-files").unwrap();
        assert_eq!(names(&s)[..2], ["activate_skill", "web_fetch"]);
        assert!(names(&s).contains(&"memory_store") && names(&s).contains(&"cron_create"));
        assert!(!names(&s).contains(&"respond_with_image") && !names(&s).contains(&"bash"));
        let mut s = Selection::all();
        s.narrow("all,-skills").unwrap();
        assert!(!names(&s).contains(&"activate_skill") && names(&s).contains(&"grep"));
        assert!(s.mcp);
        let mut s = Selection::all();
        s.narrow("all,-memory,-cron").unwrap();
        assert!(!names(&s)
            .iter()
            .any(|n| n.starts_with("memory_") || n.starts_with("cron_")));
        let mut s = Selection::all();
        s.narrow("read_file,grep").unwrap();
        assert_eq!(names(&s), vec!["read_file", "grep"]);
        assert!(!s.mcp);
        let mut s = Selection::all();
        s.narrow("none").unwrap();
        assert!(s.builtins.is_empty() && !s.mcp);
        let mut s = Selection::all();
        s.builtins.remove(&Builtin::WebFetch);
        s.narrow("all").unwrap();
        assert!(
            !s.builtins.contains(&Builtin::WebFetch),
            "env cannot turn on what agent.json turned off"
        );
        assert!(Selection::all().narrow("bsh").unwrap_err().contains("bsh"));
    }

    #[test]
    fn cap_text_cuts_on_a_char_boundary_and_says_so() {
        let t = cap_text("ééé".into(), 3, 6);
        assert!(t.starts_with('é') && t.contains("6 bytes in all"), "{t}");
        assert_eq!(cap_text("abc".into(), 3, 3), "abc");
    }
}
