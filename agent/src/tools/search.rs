//! Search tools: `glob` (file names) and `grep` (file contents), over a bounded walk of
//! the workspace that never follows a symlink, so nothing outside is listed or read.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};
use serde_json::Value;

use super::arg_str;
use super::paths::Workspace;

/// Results `glob` returns.
pub const GLOB_CAP: usize = 200;
/// Matches `grep` returns.
pub const GREP_CAP: usize = 50;
/// Entries one walk visits at most.
const WALK_CAP: usize = 100_000;
/// Files larger than this are not searched by `grep`.
const GREP_FILE_CAP: u64 = 5 * 1024 * 1024;
/// Bytes `grep` reads in all before it stops.
const GREP_TOTAL_CAP: u64 = 200 * 1024 * 1024;
/// Characters of a matching line shown.
const LINE_CAP: usize = 300;

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// What a walk does after visiting an entry.
pub enum Step {
    /// Go on (into it, for a folder).
    Go,
    /// Go on, but not into this folder.
    Skip,
    /// Stop the walk.
    Stop,
}

/// Files and folders below `base`, depth first in name order, without following
/// symlinks; `true` when the walk stopped at `WALK_CAP`.
pub fn walk(base: &Path, mut visit: impl FnMut(&Path, &fs::FileType) -> Step) -> bool {
    let mut stack: Vec<PathBuf> = vec![base.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        let mut entries: Vec<(PathBuf, fs::FileType)> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_type().ok().map(|t| (e.path(), t)))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut deeper = Vec::new();
        for (path, kind) in entries {
            seen += 1;
            if seen > WALK_CAP {
                return true;
            }
            match visit(&path, &kind) {
                Step::Stop => return false,
                Step::Go if kind.is_dir() => deeper.push(path),
                Step::Go | Step::Skip => {}
            }
        }
        // Last pushed, first walked: the first name first.
        stack.extend(deeper.into_iter().rev());
    }
    false
}

/// Go on while `more`.
fn go_on(more: bool) -> Step {
    if more {
        Step::Go
    } else {
        Step::Stop
    }
}

fn base_dir(ws: &Workspace, args: &Value) -> Result<PathBuf, String> {
    let given = args.get("path").and_then(Value::as_str).unwrap_or("");
    ws.resolve(given).map_err(|e| e.to_string())
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// `glob {pattern, path?}`: paths below `path` (default the workspace) that match.
pub fn glob(ws: &Workspace, args: &Value) -> Result<String, String> {
    let pattern = arg_str(args, "pattern")?;
    if pattern.starts_with('/') || pattern.split('/').any(|p| p == "..") {
        return Err(
            "the pattern must be relative and stay inside the workspace (no '/' at the start, no '..')"
                .into(),
        );
    }
    let compiled = Pattern::new(pattern).map_err(|e| format!("invalid pattern: {e}"))?;
    let base = base_dir(ws, args)?;
    let mut found = Vec::new();
    let mut more = false;
    let truncated = walk(&base, |path, _| {
        if compiled.matches_with(&relative(&base, path), MATCH) {
            if found.len() == GLOB_CAP {
                more = true;
                return Step::Stop;
            }
            found.push(ws.display(path));
        }
        Step::Go
    });
    if found.is_empty() {
        return Ok(format!("no files match {pattern:?}"));
    }
    let mut out = found.join("\n");
    if more {
        out.push_str(&format!(
            "\n... (more than {GLOB_CAP} matches; narrow the pattern)"
        ));
    } else if truncated {
        out.push_str(&format!("\n... (the search stopped after {WALK_CAP} entries)"));
    }
    Ok(out)
}

/// `grep {pattern, path?, include?}`: lines matching a regular expression, as
/// `file:line: text`.
pub fn grep(ws: &Workspace, args: &Value) -> Result<String, String> {
    let pattern = arg_str(args, "pattern")?;
    let re = regex_lite::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| format!("invalid regular expression: {e}"))?;
    let include = match args
        .get("include")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(p) => Some(Pattern::new(p).map_err(|e| format!("invalid include pattern: {e}"))?),
        None => None,
    };
    let base = base_dir(ws, args)?;
    let mut matches: Vec<String> = Vec::new();
    let mut read_total = 0u64;
    let mut stopped = None;
    let mut search_file = |path: &Path, matches: &mut Vec<String>| -> bool {
        if let Some(inc) = &include {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !inc.matches_with(&name, MATCH) && !inc.matches_with(&relative(&base, path), MATCH) {
                return true;
            }
        }
        let Ok(meta) = fs::metadata(path) else { return true };
        if meta.len() > GREP_FILE_CAP {
            return true;
        }
        read_total += meta.len();
        if read_total > GREP_TOTAL_CAP {
            stopped = Some(format!(
                "the search stopped after reading {} MB",
                GREP_TOTAL_CAP >> 20
            ));
            return false;
        }
        let mut bytes = Vec::new();
        if crate::regular::open(path)
            .and_then(|f| f.take(GREP_FILE_CAP).read_to_end(&mut bytes))
            .is_err()
            || bytes[..bytes.len().min(8192)].contains(&0)
        {
            return true;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if re.is_match(line) {
                if matches.len() == GREP_CAP {
                    stopped = Some(format!("more than {GREP_CAP} matches; narrow the search"));
                    return false;
                }
                let shown: String = line.chars().take(LINE_CAP).collect();
                matches.push(format!("{}:{}: {shown}", ws.display(path), n + 1));
            }
        }
        true
    };
    if base.is_file() {
        search_file(&base, &mut matches);
    } else {
        let truncated = walk(&base, |path, kind| {
            go_on(!kind.is_file() || search_file(path, &mut matches))
        });
        if truncated && stopped.is_none() {
            stopped = Some(format!("the search stopped after {WALK_CAP} entries"));
        }
    }
    if matches.is_empty() && stopped.is_none() {
        return Ok(format!("no matches for {pattern:?}"));
    }
    let mut out = matches.join("\n");
    if let Some(why) = stopped {
        out.push_str(&format!("\n... ({why})"));
    }
    Ok(out)
}
