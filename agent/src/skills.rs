//! Agent Skills (the open format of agentskills.io, which Claude, Codex, Gemini CLI and
//! others read): a folder holding a `SKILL.md`, YAML front matter naming and describing
//! the skill, then Markdown instructions, often with scripts and references beside it.
//!
//! The model sees each skill's name and description only (the catalog, at the end of the
//! system prompt) and loads a skill's instructions with `activate_skill` when a task
//! matches, so twenty skills cost twenty descriptions, not twenty sets of instructions.
//! A message starting with `/NAME` asks for a skill by name. Skills live in the workspace,
//! under `.aegis/skills/` (ours), `.agents/skills/` (shared between agents) and
//! `.claude/skills/` (where many are published for), looked for again at every message,
//! so a skill added (by hand, or by the model itself) is there for the next one. Folders
//! the operator names in `AEGIS_SKILLS_PATH` (skills shipped in an image) come after them.
//!
//! The workspace's skills are read through [`Workspace::resolve`]: a skills folder, or a
//! skill, that leads out of the workspace by a link is left out. Files are opened as
//! regular files only ([`crate::regular`]).

use std::path::PathBuf;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::session::{Role, Turn};
use crate::tools::paths::Workspace;

/// Where skills are looked for, in order: a name found twice is the first one's.
pub const ROOTS: [&str; 3] = [".aegis/skills", ".agents/skills", ".claude/skills"];
/// Skills offered at most: the catalog stays a small part of every request.
const MAX_SKILLS: usize = 64;
/// Entries of a skills folder looked at.
const MAX_ENTRIES: usize = 1000;
/// Largest SKILL.md read (the format asks for under 500 lines).
const SKILL_CAP: u64 = 256 * 1024;
/// Bytes of instructions returned (as `read_file` returns at most).
const BODY_CAP: usize = crate::tools::files::READ_CAP;
/// Characters of a description (the format's limit).
const DESCRIPTION_CAP: usize = 1024;
/// Characters of a description in the `/skills` answer.
const LISTING_CHARS: usize = 160;
/// Files of a skill's folder listed for the model, and how deep.
const RESOURCES_CAP: usize = 50;
const RESOURCES_DEPTH: usize = 3;

/// One skill found.
#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    /// From the front matter (the folder's name when it has none).
    pub name: String,
    /// What it does and when to use it.
    pub description: String,
    /// Its folder, relative to the workspace (`.agents/skills/pdf`), as tools take paths;
    /// absolute for one of `AEGIS_SKILLS_PATH` (`/opt/skills/pdf`).
    pub folder: String,
    /// In a folder of `AEGIS_SKILLS_PATH`, outside the workspace.
    pub outside: bool,
    /// In the catalog; `false` for `disable-model-invocation: true` (asked for by
    /// `/NAME` only).
    pub listed: bool,
    /// The user's to ask for (`/NAME`, `/skills`, the command menu); `false` for
    /// `user-invocable: false`, as Claude Code writes a skill only the model uses.
    pub invocable: bool,
}

/// The workspace's skills, as last looked for.
#[derive(Debug)]
pub struct Shelf {
    ws: Workspace,
    /// `AEGIS_SKILLS_PATH`.
    extra: Vec<PathBuf>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    skills: Arc<Vec<Skill>>,
    /// Problems logged already: a broken skill is reported once, not at every message.
    reported: BTreeSet<String>,
}

impl Shelf {
    /// The skills of `ws`, then of the folders `extra` (none looked for yet).
    pub fn new(ws: Workspace, extra: Vec<PathBuf>) -> Shelf {
        Shelf {
            ws,
            extra,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Look for the skills again: those found (logged when they change); each problem
    /// (a skill without a description, a name taken, a link out) is logged once.
    pub fn refresh(&self) -> Arc<Vec<Skill>> {
        let (skills, problems) = scan(&self.ws, &self.extra);
        let mut seen = lock(&self.seen);
        for p in problems {
            if seen.reported.insert(p.clone()) {
                log::warn!("skills: {p}");
            }
        }
        if *seen.skills != skills {
            let names: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
            log::info!("skills: {} ({})", names.len(), names.join(", "));
            seen.skills = Arc::new(skills);
        }
        Arc::clone(&seen.skills)
    }

    /// The skills as last looked for.
    pub fn current(&self) -> Arc<Vec<Skill>> {
        Arc::clone(&lock(&self.seen).skills)
    }

    /// Skill `name`'s instructions for the model, with its folder and the files in it;
    /// looked for again when it is not (yet) known, since the model may have just made it.
    /// A skill kept off the list (`disable-model-invocation`) is the user's to ask for:
    /// only `by_user` finds it.
    pub fn activate(&self, name: &str, by_user: bool) -> Result<String, String> {
        let find = |skills: &[Skill]| find(skills, name).filter(|s| s.listed || by_user).cloned();
        let Some(skill) = find(&self.current()).or_else(|| find(&self.refresh())) else {
            let skills = self.current();
            let names: Vec<&str> = skills
                .iter()
                .filter(|s| s.listed)
                .map(|s| s.name.as_str())
                .collect();
            return Err(format!("no skill named {name:?} (skills: {})", names.join(", ")));
        };
        let file = format!("{}/SKILL.md", skill.folder);
        let path = if skill.outside {
            PathBuf::from(&file)
        } else {
            self.ws.resolve(&file).map_err(|e| e.to_string())?
        };
        let text = crate::regular::read_to_string(&path, SKILL_CAP).map_err(|e| format!("{file}: {e}"))?;
        let body = crate::frontmatter::split(&text).map_or(text.as_str(), |(_, body)| body);
        let body = crate::tools::cap_text(body.to_string(), BODY_CAP, body.len());
        let (files, more) = resources(&path.with_file_name(""));
        let (name, folder) = (escape(&skill.name), &skill.folder);
        let example = files.first().map_or("scripts/run.py", String::as_str);
        let mut out = format!("<skill_content name=\"{name}\">\n{body}\n</skill_content>\n");
        out.push_str(&if skill.outside {
            format!(
                "The skill's folder is {folder}, outside the workspace: a path in its instructions is \
                 relative to it ({example} is {folder}/{example}); read and run its files with bash."
            )
        } else {
            format!(
                "The skill's folder is {folder}: a path in its instructions is relative to it \
                 ({example} is {folder}/{example} for the file tools; bash starts in the workspace)."
            )
        });
        if !files.is_empty() {
            out.push_str("\n<skill_resources>\n");
            for f in &files {
                out.push_str(&escape(f));
                out.push('\n');
            }
            if more {
                out.push_str("(more files, not listed)\n");
            }
            out.push_str("</skill_resources>");
        }
        Ok(out)
    }

    /// The skill a message starting with `/NAME` (or `/NAME@bot`, `_` for `-` as Telegram's
    /// commands are written) asks for, looked for again.
    pub fn asked(&self, text: &str) -> Option<Skill> {
        let (word, _) = crate::text::slash_command(text)?;
        find(&self.refresh(), &word.replace('_', "-"))
            .filter(|s| s.invocable)
            .cloned()
    }
}

/// The catalog for the end of the system prompt: how to use skills, and the name and
/// description of each listed one; "" when none is.
pub fn catalog(skills: &[Skill]) -> String {
    let listed: Vec<&Skill> = skills.iter().filter(|s| s.listed).collect();
    if listed.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n\nSkills are folders of instructions for particular tasks. When a task \
         matches a skill's description, call activate_skill with its name before you start, and \
         follow the instructions it returns.\n<available_skills>\n",
    );
    for s in listed {
        out.push_str(&format!(
            "<skill>\n<name>{}</name>\n<description>{}</description>\n</skill>\n",
            escape(&s.name),
            escape(&s.description)
        ));
    }
    out.push_str("</available_skills>");
    out
}

/// The answer to `/skills` in a chat: each skill as the command that asks for it, with
/// the start of its description.
pub fn listing(skills: &[Skill]) -> String {
    if skills.is_empty() {
        return "No skills yet. A skill is a folder holding a SKILL.md (name and description, then \
                instructions) in the workspace's .agents/skills/, .aegis/skills/ or .claude/skills/."
            .into();
    }
    let (commands, own): (Vec<&Skill>, Vec<&Skill>) = skills.iter().partition(|s| s.invocable);
    let mut out = String::new();
    if !commands.is_empty() {
        out.push_str("Skills (start a message with one to use it; the agent also picks them itself):");
    }
    for s in commands {
        let only = if s.listed { "" } else { " (only when asked for)" };
        // As Telegram writes a command, so that it can be tapped.
        let command = s.name.replace('-', "_");
        out.push_str(&format!("\n/{command} — {}{only}", first_words(&s.description)));
    }
    if !own.is_empty() {
        let names: Vec<&str> = own.iter().map(|s| s.name.as_str()).collect();
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!(
            "Skills the agent uses on its own: {}.",
            names.join(", ")
        ));
    }
    out
}

/// A note for the model when the instructions of skills it loaded fell out of the
/// conversation's window (`history[..fell_out]`), looking back `look_back` turns from
/// there: which they are, so that it loads one again if the task goes on; "" when none
/// did. Only skills still listed in `skills` count, and not one loaded again in view.
pub fn out_of_view(history: &[Turn], fell_out: usize, look_back: usize, skills: &[Skill]) -> String {
    let loaded = |turns: &[Turn]| -> Vec<String> {
        turns
            .iter()
            .filter(|t| t.role == Role::Assistant)
            .flat_map(|t| t.content.tool_uses())
            .filter(|(_, tool, _)| *tool == crate::tools::ACTIVATE_SKILL)
            .filter_map(|(_, _, input)| input["name"].as_str().map(str::to_string))
            .collect()
    };
    let fell_out = fell_out.min(history.len());
    let in_view = loaded(&history[fell_out..]);
    let mut gone: Vec<String> = Vec::new();
    for name in loaded(&history[fell_out.saturating_sub(look_back)..fell_out])
        .into_iter()
        .rev()
    {
        let listed = find(skills, &name).is_some_and(|s| s.listed);
        if listed && !in_view.contains(&name) && !gone.contains(&name) {
            gone.push(name);
        }
    }
    if gone.is_empty() {
        return String::new();
    }
    format!(
        "[Skills you loaded earlier in this conversation whose instructions are no longer in view: {}. \
         If the task still needs one, call activate_skill for it again.]",
        gone.join(", ")
    )
}

/// The start of `description`, for a list in a chat.
pub fn first_words(description: &str) -> String {
    crate::text::clip(description, LISTING_CHARS)
}

/// The skill called `name` (`-` and `_` alike, any case).
fn find<'s>(skills: &'s [Skill], name: &str) -> Option<&'s Skill> {
    let wanted = name
        .trim()
        .trim_start_matches('/')
        .to_lowercase()
        .replace('_', "-");
    skills
        .iter()
        .find(|s| s.name == name || s.name.to_lowercase().replace('_', "-") == wanted)
}

/// The skills of the workspace, then of the folders `extra`, and what was wrong with
/// those left out.
fn scan(ws: &Workspace, extra: &[PathBuf]) -> (Vec<Skill>, Vec<String>) {
    let mut skills: Vec<Skill> = Vec::new();
    let mut problems = Vec::new();
    let roots = ROOTS
        .iter()
        .map(|r| (r.to_string(), false))
        .chain(extra.iter().map(|d| (d.display().to_string(), true)));
    for (root, outside) in roots {
        let dir = if outside {
            PathBuf::from(&root)
        } else {
            match ws.resolve(&root) {
                Ok(dir) => dir,
                Err(e) => {
                    problems.push(format!("{e}; the skills in it are not offered"));
                    continue;
                }
            }
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if outside => {
                problems.push(format!("AEGIS_SKILLS_PATH: {root}: {e}"));
                continue;
            }
            Err(_) => continue,
        };
        let mut names: Vec<String> = entries
            .take(MAX_ENTRIES)
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for entry in names {
            let folder = format!("{}/{entry}", root.trim_end_matches('/'));
            // (its folder, its SKILL.md) on disk
            let paths = if outside {
                let dir = dir.join(&entry);
                Ok((dir.join("SKILL.md"), dir))
            } else {
                within(ws, &dir, &entry, &folder)
                    .and_then(|d| Ok((within(ws, &d, "SKILL.md", &format!("{folder}/SKILL.md"))?, d)))
                    .map_err(|e| format!("{e}; not offered"))
            };
            match paths.and_then(|(file, dir)| read_skill(&dir, &file, &folder, &entry, outside)) {
                Ok(None) => {}
                Ok(Some((skill, mut warnings))) => {
                    problems.append(&mut warnings);
                    if let Some(first) = skills.iter().find(|s| s.name == skill.name) {
                        problems.push(format!(
                            "{folder}: the name {:?} is {}'s already; this one is not offered",
                            skill.name, first.folder
                        ));
                    } else if skills.len() == MAX_SKILLS {
                        problems.push(format!(
                            "more than {MAX_SKILLS} skills; {folder} and the rest are not offered"
                        ));
                        return (skills, problems);
                    } else {
                        skills.push(skill);
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
    }
    (skills, problems)
}

/// `name` in `dir`, a real folder inside the workspace, shown to the model as `shown`: as
/// it is, unless it is a link, which must lead back inside (only a link can lead out of
/// a real folder, and resolving every path whole costs a `realpath` per component, 64
/// skills at every message).
fn within(
    ws: &Workspace,
    dir: &Path,
    name: &str,
    shown: &str,
) -> Result<PathBuf, crate::tools::paths::PathError> {
    let path = dir.join(name);
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => ws.resolve(shown),
        _ => Ok(path),
    }
}

/// The skill in `folder` (`entry` of a skills folder, of the workspace unless `outside`;
/// `dir` on disk, with its SKILL.md at `path`), with what is odd about it; `Ok(None)` for
/// an entry that is no skill and says nothing about one.
fn read_skill(
    dir: &Path,
    path: &Path,
    folder: &str,
    entry: &str,
    outside: bool,
) -> Result<Option<(Skill, Vec<String>)>, String> {
    if !dir.is_dir() {
        if entry.ends_with(".md") {
            return Err(format!(
                "{folder} is not a skill: a skill is a folder holding SKILL.md ({folder} would be \
                 {}/SKILL.md)",
                folder.trim_end_matches(".md")
            ));
        }
        return Ok(None);
    }
    let file = format!("{folder}/SKILL.md");
    let text = match crate::regular::read_to_string(path, SKILL_CAP + 1) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{file}: {e}; not offered")),
    };
    if text.len() as u64 > SKILL_CAP {
        return Err(format!(
            "{file} is larger than {} KB; not offered",
            SKILL_CAP / 1024
        ));
    }
    let Some((fields, _)) = crate::frontmatter::split(&text) else {
        return Err(format!(
            "{file} does not start with front matter (---, name: and description: lines, ---); not offered"
        ));
    };
    let mut warnings = Vec::new();
    let description: String = fields.get("description").map_or("", |d| d.trim()).into();
    if description.is_empty() {
        return Err(format!(
            "{file} has no description, which is how a skill is chosen; not offered"
        ));
    }
    if description.chars().count() > DESCRIPTION_CAP {
        warnings.push(format!(
            "{file}: the description is cut to {DESCRIPTION_CAP} characters"
        ));
    }
    let name = match fields.get("name").map(|n| n.trim()).filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => {
            warnings.push(format!("{file} has no name; the folder's, {entry:?}, is used"));
            entry.to_string()
        }
    };
    if name != entry {
        warnings.push(format!(
            "{file}: the name {name:?} is not the folder's ({entry:?}); offered as {name:?}"
        ));
    }
    if !valid_name(&name) {
        warnings.push(format!(
            "{file}: the name {name:?} is not lowercase letters, digits and single hyphens (at most 64)"
        ));
    }
    let flag = |field: &str| fields.get(field).map(|v| v.trim());
    Ok(Some((
        Skill {
            name,
            description: description.chars().take(DESCRIPTION_CAP).collect(),
            folder: folder.to_string(),
            outside,
            listed: flag("disable-model-invocation") != Some("true"),
            invocable: flag("user-invocable") != Some("false"),
        },
        warnings,
    )))
}

/// A name as the format wants it: `a-z`, `0-9` and `-`, not at either end nor doubled,
/// 64 characters at most.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The files of a skill's folder (relative to it, sorted, without SKILL.md and hidden
/// files), at most [`RESOURCES_CAP`] of them, [`RESOURCES_DEPTH`] folders deep; and whether
/// there were more. Links are listed, never followed.
fn resources(dir: &Path) -> (Vec<String>, bool) {
    use crate::tools::search::{walk, Step};
    let mut files = Vec::new();
    let mut deeper = false;
    let truncated = walk(dir, |path, kind| {
        let Ok(rel) = path.strip_prefix(dir) else {
            return Step::Skip;
        };
        let parts: Option<Vec<&str>> = rel.iter().map(|p| p.to_str()).collect();
        let Some(parts) = parts else {
            return Step::Skip;
        };
        let name = parts.last().copied().unwrap_or("");
        if name.starts_with('.') || name == "node_modules" || name == "__pycache__" {
            return Step::Skip;
        }
        if !kind.is_dir() {
            if rel != Path::new("SKILL.md") {
                files.push(parts.join("/"));
            }
            return Step::Go;
        }
        if parts.len() < RESOURCES_DEPTH {
            Step::Go
        } else {
            deeper = true;
            Step::Skip
        }
    });
    let mut more = truncated || deeper;
    files.sort();
    if files.len() > RESOURCES_CAP {
        files.truncate(RESOURCES_CAP);
        more = true;
    }
    (files, more)
}

/// `text` safe inside the catalog's tags.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn lock(m: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    // Each change is whole (one assignment): a panic elsewhere leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn skill(ws: &Path, folder: &str, front: &str, body: &str) {
        let dir = ws.join(folder);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("SKILL.md"), format!("---\n{front}\n---\n{body}")).unwrap();
    }

    fn shelf(dir: &TempDir) -> Shelf {
        Shelf::new(Workspace::new(dir.path()).unwrap(), Vec::new())
    }

    #[test]
    fn skills_are_found_in_each_folder_the_first_of_a_name_winning() {
        let d = TempDir::new("skills-found");
        let ws = d.path();
        skill(
            ws,
            ".agents/skills/pdf",
            "name: pdf\ndescription: Read PDFs. Use when: a PDF comes",
            "Use pdftotext.",
        );
        skill(
            ws,
            ".aegis/skills/pdf",
            "name: pdf\ndescription: Ours wins",
            "Ours.",
        );
        skill(
            ws,
            ".claude/skills/review",
            "name: review\ndescription: >\n  Review code\n  changes",
            "",
        );
        skill(
            ws,
            ".aegis/skills/quiet",
            "name: quiet\ndescription: Only when asked\ndisable-model-invocation: true",
            "",
        );
        skill(ws, ".aegis/skills/broken", "name: broken", "");
        fs::create_dir_all(ws.join(".aegis/skills/empty-folder")).unwrap();
        fs::write(
            ws.join(".aegis/skills/flat.md"),
            "---\nname: flat\ndescription: x\n---\n",
        )
        .unwrap();
        let skills = shelf(&d).refresh();
        let got: Vec<(&str, &str, &str, bool)> = skills
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.description.as_str(),
                    s.folder.as_str(),
                    s.listed,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("pdf", "Ours wins", ".aegis/skills/pdf", true),
                ("quiet", "Only when asked", ".aegis/skills/quiet", false),
                ("review", "Review code changes", ".claude/skills/review", true),
            ]
        );
        let (_, problems) = scan(&Workspace::new(ws).unwrap(), &[]);
        let said = problems.join("\n");
        assert!(
            said.contains(".aegis/skills/broken/SKILL.md has no description"),
            "{said}"
        );
        assert!(
            said.contains(".agents/skills/pdf: the name \"pdf\" is .aegis/skills/pdf's already"),
            "{said}"
        );
        assert!(said.contains(".aegis/skills/flat.md is not a skill"), "{said}");
        assert!(!said.contains("empty-folder"), "{said}");
    }

    #[test]
    fn the_catalog_lists_names_and_descriptions_escaped_and_nothing_without_skills() {
        assert_eq!(catalog(&[]), "");
        let s = |name: &str, listed| Skill {
            name: name.into(),
            description: "Use for <b>&</b> tables".into(),
            folder: format!(".aegis/skills/{name}"),
            outside: false,
            listed,
            invocable: true,
        };
        assert_eq!(catalog(&[s("hidden", false)]), "");
        let c = catalog(&[s("csv", true), s("hidden", false)]);
        assert!(c.contains("<skill>\n<name>csv</name>\n<description>Use for &lt;b&gt;&amp;&lt;/b&gt; tables</description>\n</skill>"), "{c}");
        assert!(c.contains("call activate_skill") && !c.contains("hidden"), "{c}");
    }

    #[test]
    fn the_listing_names_each_skill_as_its_command() {
        assert!(listing(&[]).starts_with("No skills yet."));
        let long = "x".repeat(300);
        let skills = [
            Skill {
                name: "csv".into(),
                description: "Summarise a CSV".into(),
                folder: ".aegis/skills/csv".into(),
                outside: false,
                listed: true,
                invocable: true,
            },
            Skill {
                name: "weekly-report".into(),
                description: long,
                folder: ".aegis/skills/weekly-report".into(),
                outside: false,
                listed: false,
                invocable: true,
            },
        ];
        let l = listing(&skills);
        // As Telegram writes a command: a tap on it sends it whole.
        assert!(l.contains("\n/csv — Summarise a CSV\n/weekly_report — "), "{l}");
        assert!(
            l.ends_with(&format!("{}… (only when asked for)", "x".repeat(160))),
            "{l}"
        );
    }

    #[test]
    fn skills_whose_instructions_fell_out_of_view_are_named_once_each() {
        let listed = |name: &str, listed: bool| Skill {
            name: name.into(),
            description: "d".into(),
            folder: format!(".aegis/skills/{name}"),
            outside: false,
            listed,
            invocable: true,
        };
        let skills = [listed("csv", true), listed("docx", true), listed("quiet", false)];
        let load = |id: &str, name: &str| {
            vec![
                Turn::tool_calls(
                    "",
                    &[crate::llm::ToolCall {
                        id: id.into(),
                        name: crate::tools::ACTIVATE_SKILL.into(),
                        input: serde_json::json!({"name": name}),
                    }],
                ),
                Turn::tool_result(id, "instructions".into()),
            ]
        };
        let ask = |n: usize| Turn::new(Role::User, format!("question {n}"));
        // 0: question, 1-2: csv, 3-4: docx, 5-6: csv again, 7-8: gone, 9-10: quiet, 11: question.
        let mut h = vec![ask(0)];
        for (id, name) in [
            ("a", "csv"),
            ("b", "docx"),
            ("c", "csv"),
            ("d", "gone"),
            ("e", "quiet"),
        ] {
            h.extend(load(id, name));
        }
        h.push(ask(11));
        let note = out_of_view(&h, 11, 50, &skills);
        assert_eq!(
            note,
            "[Skills you loaded earlier in this conversation whose instructions are no longer in view: \
             csv, docx. If the task still needs one, call activate_skill for it again.]",
            "the newest first, each once, only skills still listed"
        );
        assert_eq!(out_of_view(&h, 0, 50, &skills), "", "nothing fell out");
        assert_eq!(
            out_of_view(&h, 11, 4, &skills),
            "",
            "loaded too long before the window"
        );
        // docx loaded again, in view: only csv is gone.
        h.extend(load("f", "docx"));
        assert!(out_of_view(&h, 11, 50, &skills).contains("view: csv. If"));
        assert!(out_of_view(&h, 99, 50, &skills).contains("view: docx, csv. If"));
    }

    #[test]
    fn activating_returns_the_instructions_the_folder_and_its_files() {
        let d = TempDir::new("skills-activate");
        let ws = d.path();
        skill(
            ws,
            ".agents/skills/pdf",
            "name: pdf\ndescription: PDFs",
            "# PDF\n\nRun scripts/extract.py.\n",
        );
        for f in [
            "scripts/extract.py",
            "references/guide.md",
            ".hidden",
            "a/b/c/deep.txt",
        ] {
            let p = ws.join(".agents/skills/pdf").join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "x").unwrap();
        }
        let shelf = shelf(&d);
        shelf.refresh();
        let out = shelf.activate("pdf", false).unwrap();
        assert!(
            out.starts_with(
                "<skill_content name=\"pdf\">\n# PDF\n\nRun scripts/extract.py.\n</skill_content>"
            ),
            "{out}"
        );
        assert!(
            !out.contains("description: PDFs"),
            "the front matter is not repeated: {out}"
        );
        assert!(out.contains("The skill's folder is .agents/skills/pdf:"), "{out}");
        assert!(
            out.contains(
                "(references/guide.md is .agents/skills/pdf/references/guide.md for the file tools;"
            ),
            "{out}"
        );
        assert!(out.ends_with("<skill_resources>\nreferences/guide.md\nscripts/extract.py\n(more files, not listed)\n</skill_resources>"), "{out}");
        // Made after the last look: found on activation.
        skill(
            ws,
            ".aegis/skills/new-one",
            "name: new-one\ndescription: Fresh",
            "Fresh steps.",
        );
        assert!(shelf.activate("new_one", false).unwrap().contains("Fresh steps."));
        let err = shelf.activate("nope", false).unwrap_err();
        assert!(
            err.contains("no skill named \"nope\"") && err.contains("new-one, pdf"),
            "{err}"
        );
    }

    #[test]
    fn a_slash_command_asks_for_a_skill_by_name() {
        let d = TempDir::new("skills-slash");
        skill(
            d.path(),
            ".aegis/skills/weekly-report",
            "name: weekly-report\ndescription: Reports",
            "",
        );
        let shelf = shelf(&d);
        for text in [
            "/weekly-report",
            "  /weekly_report for March",
            "/Weekly-Report@my_bot now",
        ] {
            assert_eq!(
                shelf.asked(text).map(|s| s.name),
                Some("weekly-report".into()),
                "{text}"
            );
        }
        for text in ["weekly-report", "/weekly", "please /weekly-report", "/usage", "/"] {
            assert_eq!(shelf.asked(text), None, "{text}");
        }
        skill(
            d.path(),
            ".aegis/skills/quiet",
            "name: quiet\ndescription: Asked for only\ndisable-model-invocation: true",
            "Quiet steps.",
        );
        assert_eq!(shelf.asked("/quiet").map(|s| s.listed), Some(false));
        assert!(shelf.activate("quiet", true).unwrap().contains("Quiet steps."));
        let err = shelf.activate("quiet", false).unwrap_err();
        assert!(
            err.contains("no skill named \"quiet\"") && !err.contains("quiet,"),
            "{err}"
        );
        // A skill only the model uses is no command: `/NAME` is the user's words, and
        // `/skills` names it apart.
        skill(
            d.path(),
            ".aegis/skills/house-style",
            "name: house-style\ndescription: How we write\nuser-invocable: false",
            "Short sentences.",
        );
        assert_eq!(shelf.asked("/house_style"), None);
        assert!(shelf
            .activate("house-style", false)
            .unwrap()
            .contains("Short sentences."));
        let listed = listing(&shelf.refresh());
        assert!(
            listed.contains("/weekly_report — Reports")
                && listed.ends_with("\n\nSkills the agent uses on its own: house-style."),
            "{listed}"
        );
        assert!(!listed.contains("/house_style"), "{listed}");
    }

    #[test]
    fn skills_leading_out_of_the_workspace_are_not_read() {
        let d = TempDir::new("skills-outside");
        let outside = d.path().join("outside");
        let ws = d.path().join("ws");
        skill(
            &outside,
            "evil",
            "name: evil\ndescription: Read the host",
            "SECRET STEPS",
        );
        skill(
            &outside,
            "skills/planted",
            "name: planted\ndescription: Planted",
            "SECRET STEPS",
        );
        fs::create_dir_all(ws.join(".aegis/skills")).unwrap();
        fs::create_dir_all(&ws).unwrap();
        std::os::unix::fs::symlink(outside.join("evil"), ws.join(".aegis/skills/evil")).unwrap();
        fs::create_dir_all(ws.join(".agents")).unwrap();
        std::os::unix::fs::symlink(outside.join("skills"), ws.join(".agents/skills")).unwrap();
        fs::create_dir_all(ws.join(".aegis/skills/linked-file")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("evil/SKILL.md"),
            ws.join(".aegis/skills/linked-file/SKILL.md"),
        )
        .unwrap();
        // A link inside the workspace is followed.
        skill(
            &ws,
            "mine/local",
            "name: local\ndescription: Mine",
            "Local steps.",
        );
        std::os::unix::fs::symlink(ws.join("mine/local"), ws.join(".aegis/skills/local")).unwrap();
        let shelf = Shelf::new(Workspace::new(&ws).unwrap(), Vec::new());
        let names: Vec<String> = shelf.refresh().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, vec!["local"]);
        assert!(shelf.activate("evil", false).is_err() && shelf.activate("planted", false).is_err());
        assert!(shelf.activate("linked-file", false).is_err());
        assert!(shelf.activate("local", false).unwrap().contains("Local steps."));
        let (_, problems) = scan(&Workspace::new(&ws).unwrap(), &[]);
        assert!(
            problems
                .iter()
                .any(|p| p.contains(".aegis/skills/evil") && p.contains("outside")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains(".agents/skills") && p.contains("outside")),
            "{problems:?}"
        );
    }

    #[test]
    fn names_are_checked_and_problems_reported_once() {
        for ok in ["pdf", "data-analysis", "a1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["PDF", "-pdf", "pdf-", "pdf--x", "a b", "", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        let d = TempDir::new("skills-once");
        skill(d.path(), ".aegis/skills/broken", "name: broken", "");
        let shelf = shelf(&d);
        shelf.refresh();
        shelf.refresh();
        assert_eq!(lock(&shelf.seen).reported.len(), 1);
    }

    #[test]
    fn skills_of_the_image_come_after_the_workspaces_and_say_where_they_are() {
        let d = TempDir::new("skills-extra");
        let ws = d.path().join("ws");
        let image = d.path().join("opt-skills");
        skill(
            &ws,
            ".agents/skills/pdf",
            "name: pdf\ndescription: The workspace's",
            "Mine.",
        );
        skill(&image, "pdf", "name: pdf\ndescription: The image's", "Theirs.");
        skill(
            &image,
            "xlsx",
            "name: xlsx\ndescription: Spreadsheets",
            "Use openpyxl.",
        );
        fs::create_dir_all(image.join("xlsx/scripts")).unwrap();
        fs::write(image.join("xlsx/scripts/recalc.py"), "x").unwrap();
        let missing = d.path().join("nowhere");
        let shelf = Shelf::new(Workspace::new(&ws).unwrap(), vec![image.clone(), missing.clone()]);
        let skills = shelf.refresh();
        let got: Vec<(&str, &str, bool)> = skills
            .iter()
            .map(|s| (s.name.as_str(), s.description.as_str(), s.outside))
            .collect();
        assert_eq!(
            got,
            vec![("pdf", "The workspace's", false), ("xlsx", "Spreadsheets", true)]
        );
        let out = shelf.activate("xlsx", false).unwrap();
        let folder = image.join("xlsx").display().to_string();
        assert!(out.contains("Use openpyxl."), "{out}");
        assert!(
            out.contains(&format!("The skill's folder is {folder}, outside the workspace: a path in its instructions is relative to it (scripts/recalc.py is {folder}/scripts/recalc.py); read and run its files with bash.")),
            "{out}"
        );
        let (_, problems) = scan(&Workspace::new(&ws).unwrap(), &[missing]);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("AEGIS_SKILLS_PATH: ") && p.contains("nowhere")),
            "{problems:?}"
        );
    }
}
