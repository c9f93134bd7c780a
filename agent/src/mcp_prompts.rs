//! An MCP server's prompts (templates a user picks, as the protocol means them: "exposed
//! as slash commands") as chat commands: `/SERVER_PROMPT args` gets the prompt from the
//! server and the model answers what it says. [`crate::mcp`] makes the requests; this
//! module names the commands, reads the arguments out of the message and writes what the
//! model reads.

use serde_json::{Map, Value};

/// Characters of a prompt's text the model reads, at most (as a read resource's).
pub const MAX_TEXT: usize = crate::mcp_resources::MAX_TEXT;
/// Prompts of one server taken from its list, at most.
pub const MAX_PROMPTS: usize = 200;

/// What a message that runs a prompt comes to.
#[derive(Debug, PartialEq)]
pub enum Asked {
    /// The user's turn: the message, then what the prompt says.
    Expanded(String),
    /// An answer for the user, without the model (how to give the arguments, why the
    /// prompt did not run).
    Answer(String),
    /// The reply was cancelled meanwhile.
    Cancelled,
}

/// One prompt a server lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The command that asks for it, without `/`: `SERVER_NAME` with everything but ASCII
    /// letters and digits made `_`, lower case, as Telegram writes commands.
    pub command: String,
    /// Its name on the server.
    pub remote: String,
    pub description: String,
    pub args: Vec<Arg>,
}

/// An argument a prompt takes (always text, in MCP).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: String,
    pub description: String,
    pub required: bool,
}

/// `server` and `name` as a command word.
pub fn command(server: &str, name: &str) -> String {
    format!("{server}_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The prompts of one `prompts/list` page of `server`.
pub fn listed(page: &Value, server: &str) -> Vec<Prompt> {
    let prompts = page["prompts"].as_array().map(Vec::as_slice).unwrap_or_default();
    prompts
        .iter()
        .filter_map(|p| {
            let remote = p["name"].as_str().filter(|n| !n.is_empty())?;
            let args = p["arguments"].as_array().map(Vec::as_slice).unwrap_or_default();
            Some(Prompt {
                command: command(server, remote),
                remote: remote.to_string(),
                description: text_of(&p["description"])
                    .or_else(|| text_of(&p["title"]))
                    .unwrap_or_default(),
                args: args
                    .iter()
                    .filter_map(|a| {
                        Some(Arg {
                            name: a["name"].as_str().filter(|n| !n.is_empty())?.to_string(),
                            description: text_of(&a["description"]).unwrap_or_default(),
                            required: a["required"].as_bool() == Some(true),
                        })
                    })
                    .collect(),
            })
        })
        .collect()
}

fn text_of(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// What a message gives a prompt.
#[derive(Debug, Default, PartialEq)]
pub struct Given {
    /// Its arguments, by name.
    pub args: Map<String, Value>,
    /// Words left once every argument has its value (all of them, for a prompt without
    /// arguments): the user's own addition.
    pub more: String,
}

/// The arguments of `prompt` in `rest` (what follows the command): `name=value` words for
/// any argument by its name, the other words for the arguments not named, in order, the
/// last of them taking the rest of the message as it is (several lines, spaces). A word in
/// double quotes may hold spaces. Missing a required argument: how to give it.
pub fn arguments(prompt: &Prompt, rest: &str) -> Result<Given, String> {
    let mut given = Map::new();
    let mut more = String::new();
    let mut left = rest;
    loop {
        let trimmed = left.trim_start();
        let Some((word, after)) = next_word(trimmed) else {
            break;
        };
        let named = word.split_once('=').and_then(|(name, value)| {
            let arg = prompt.args.iter().find(|a| a.name == name)?;
            Some((arg, value))
        });
        match named {
            Some((arg, value)) if !given.contains_key(&arg.name) => {
                given.insert(arg.name.clone(), Value::String(unquote(value).to_string()));
            }
            _ => {
                let open: Vec<&Arg> = prompt
                    .args
                    .iter()
                    .filter(|a| !given.contains_key(&a.name))
                    .collect();
                match open.as_slice() {
                    [] => {
                        more = trimmed.trim_end().to_string();
                        break;
                    }
                    [last] => {
                        given.insert(
                            last.name.clone(),
                            Value::String(unquote(trimmed.trim_end()).to_string()),
                        );
                        break;
                    }
                    [first, ..] => {
                        given.insert(first.name.clone(), Value::String(unquote(word).to_string()));
                    }
                }
            }
        }
        left = after;
    }
    let missing: Vec<&str> = prompt
        .args
        .iter()
        .filter(|a| a.required && !given.contains_key(&a.name))
        .map(|a| a.name.as_str())
        .collect();
    if missing.is_empty() {
        Ok(Given { args: given, more })
    } else {
        Err(format!(
            "/{} needs {}.\n{}",
            prompt.command,
            missing.join(", "),
            usage(prompt)
        ))
    }
}

/// The first word of `text` (which starts with no space) and what follows it: up to the
/// next space, or a whole `"..."` when a quote closes before a space or the end.
fn next_word(text: &str) -> Option<(&str, &str)> {
    if text.is_empty() {
        return None;
    }
    let quoted_end = text.strip_prefix('"').and_then(|inner| {
        inner
            .match_indices('"')
            .map(|(i, _)| i + 2)
            .find(|&end| text[end..].chars().next().is_none_or(char::is_whitespace))
    });
    let end = quoted_end.unwrap_or_else(|| {
        // `name="a b"`: the quotes after `=` hold spaces too.
        let plain_end = text.find(char::is_whitespace).unwrap_or(text.len());
        match text[..plain_end].find("=\"") {
            Some(eq) => text[eq + 2..]
                .match_indices('"')
                .map(|(i, _)| eq + 3 + i)
                .find(|&end| text[end..].chars().next().is_none_or(char::is_whitespace))
                .unwrap_or(plain_end),
            None => plain_end,
        }
    });
    Some((&text[..end], &text[end..]))
}

/// `"a b"` → `a b`; anything else as it is.
fn unquote(word: &str) -> &str {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) if word.len() >= 2 => inner,
        _ => word,
    }
}

/// How to use `prompt`: the command with its arguments (optional ones in brackets), what
/// it does and what each argument is.
pub fn usage(prompt: &Prompt) -> String {
    let mut out = format!("/{}", prompt.command);
    for a in &prompt.args {
        let name = a.name.to_uppercase();
        if a.required {
            out.push_str(&format!(" {name}"));
        } else {
            out.push_str(&format!(" [{name}]"));
        }
    }
    if !prompt.description.is_empty() {
        out.push_str(&format!(" — {}", prompt.description));
    }
    for a in prompt.args.iter().filter(|a| !a.description.is_empty()) {
        out.push_str(&format!("\n  {}: {}", a.name, a.description));
    }
    out
}

/// A `prompts/get` result as what the user's turn says: the command as sent, which prompt
/// of which server it ran with which arguments, and the prompt's messages (marked by role
/// when the prompt has the assistant speak too), cut at [`MAX_TEXT`] characters. `part`
/// writes one content item.
pub fn expansion(
    sent: &str,
    server: &str,
    prompt: &Prompt,
    given: &Given,
    result: &Value,
    part: &dyn Fn(&Value) -> Option<String>,
) -> String {
    let messages = result["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let both = messages.iter().any(|m| m["role"] == "assistant");
    let mut body = Vec::new();
    for m in messages {
        let Some(text) = part(&m["content"]) else {
            continue;
        };
        body.push(match (both, m["role"].as_str()) {
            (true, Some(role)) => format!("[{role}]\n{text}"),
            _ => text,
        });
    }
    let mut body = body.join("\n\n");
    if let Some((cut, _)) = body.char_indices().nth(MAX_TEXT) {
        body.truncate(cut);
        body.push_str(&format!("\n[the prompt is cut here, at {MAX_TEXT} characters]"));
    }
    // In the order the prompt declares them.
    let args: Vec<String> = prompt
        .args
        .iter()
        .filter_map(|a| Some(format!("{}: {}", a.name, given.args.get(&a.name)?.as_str()?)))
        .collect();
    let with = if args.is_empty() {
        String::new()
    } else {
        format!(", given {}", args.join("; "))
    };
    let extra = if given.more.is_empty() {
        String::new()
    } else {
        format!("\n[The user adds:]\n{}", given.more)
    };
    format!(
        "{}\n[This runs the prompt {} of MCP server {server}{with}. It says:]\n{body}{extra}",
        sent.trim(),
        prompt.remote
    )
}

/// The prompts part of the answer to `/skills`: each prompt as its command, with its
/// arguments and the start of its description; "" without any.
pub fn listing(prompts: &[(String, Prompt)]) -> String {
    if prompts.is_empty() {
        return String::new();
    }
    let mut out = String::from("Prompts of the MCP servers (words after the command fill its arguments):");
    for (_, p) in prompts {
        let line = usage(&Prompt {
            args: p.args.clone(),
            description: crate::skills::first_words(&p.description),
            command: p.command.clone(),
            remote: String::new(),
        });
        // One line each: the arguments' descriptions are for `/COMMAND` without them.
        out.push('\n');
        out.push_str(line.lines().next().unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::slash_command as asked;
    use proptest::prelude::*;
    use serde_json::json;

    fn prompt(args: &[(&str, bool)]) -> Prompt {
        Prompt {
            command: "github_issue".into(),
            remote: "issue".into(),
            description: "File an issue".into(),
            args: args
                .iter()
                .map(|(n, r)| Arg {
                    name: n.to_string(),
                    description: format!("the {n}"),
                    required: *r,
                })
                .collect(),
        }
    }

    fn got(p: &Prompt, rest: &str) -> Vec<(String, String)> {
        arguments(p, rest)
            .unwrap()
            .args
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.sort();
        v
    }

    #[test]
    fn commands_are_telegram_words() {
        assert_eq!(command("github", "review-pr"), "github_review_pr");
        assert_eq!(
            command("My Server", "Summarize.Today"),
            "my_server_summarize_today"
        );
        assert_eq!(command("notes", "résumé"), "notes_r_sum_");
        assert_eq!(
            asked("/GitHub_Review_PR@my_bot 42 now"),
            Some(("github_review_pr".into(), "42 now"))
        );
        assert_eq!(asked("  /notes_today"), Some(("notes_today".into(), "")));
        assert_eq!(asked("/ hello"), None);
        assert_eq!(asked("hello /notes_today"), None);
    }

    #[test]
    fn a_list_page_gives_the_prompts_it_names() {
        let page = json!({"prompts": [
            {"name": "review-pr", "title": "Review", "arguments": [
                {"name": "pr", "description": "The PR number", "required": true},
                {"name": "focus"}, {"description": "no name"}]},
            {"name": "", "description": "no name"},
            {"description": "no name at all"},
            {"name": "today", "description": "  Today's notes  "}
        ]});
        let got = listed(&page, "gh");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].command, "gh_review_pr");
        assert_eq!(
            got[0].description, "Review",
            "the title when there is no description"
        );
        assert_eq!(
            got[0].args,
            [
                Arg {
                    name: "pr".into(),
                    description: "The PR number".into(),
                    required: true
                },
                Arg {
                    name: "focus".into(),
                    description: String::new(),
                    required: false
                },
            ]
        );
        assert_eq!(
            (got[1].remote.as_str(), got[1].description.as_str()),
            ("today", "Today's notes")
        );
        assert!(listed(&json!({"prompts": "no"}), "gh").is_empty());
    }

    #[test]
    fn words_fill_the_arguments_in_order_the_last_taking_the_rest() {
        let p = prompt(&[("repo", true), ("title", true), ("body", false)]);
        assert_eq!(
            got(&p, "aegis Login fails\nwhen the code has spaces"),
            pairs(&[
                ("repo", "aegis"),
                ("title", "Login"),
                ("body", "fails\nwhen the code has spaces")
            ])
        );
        assert_eq!(
            got(&p, r#""my repo" "Login fails" it does"#),
            pairs(&[("repo", "my repo"), ("title", "Login fails"), ("body", "it does")])
        );
        assert_eq!(
            got(&p, r#"title="Login fails" body=x aegis"#),
            pairs(&[("repo", "aegis"), ("title", "Login fails"), ("body", "x")])
        );
        // An apostrophe, a lone quote, `=` in a word that names nothing: words like others.
        assert_eq!(
            got(&p, r#"a=b "don't x=y"#),
            pairs(&[("repo", "a=b"), ("title", "\"don't"), ("body", "x=y")])
        );
        let one = prompt(&[("code", true)]);
        assert_eq!(
            got(&one, "  fn main() {\n    x = 1;\n}  "),
            pairs(&[("code", "fn main() {\n    x = 1;\n}")])
        );
        assert_eq!(got(&one, "\"quoted whole\""), pairs(&[("code", "quoted whole")]));
    }

    #[test]
    fn a_missing_required_argument_is_asked_for_with_the_usage() {
        let p = prompt(&[("repo", true), ("title", true), ("body", false)]);
        let e = arguments(&p, "aegis").unwrap_err();
        assert_eq!(
            e,
            "/github_issue needs title.\n/github_issue REPO TITLE [BODY] — File an issue\n  repo: the repo\n  \
             title: the title\n  body: the body"
        );
        assert!(arguments(&p, "")
            .unwrap_err()
            .starts_with("/github_issue needs repo, title."));
        assert_eq!(got(&prompt(&[("a", false)]), ""), pairs(&[]));
        // Words left once every argument has its value are the user's addition.
        let none = prompt(&[]);
        assert_eq!(arguments(&none, "").unwrap(), Given::default());
        assert_eq!(arguments(&none, " and be brief\n ").unwrap().more, "and be brief");
        let named = arguments(&prompt(&[("repo", true)]), "repo=aegis be brief").unwrap();
        assert_eq!(
            (named.args["repo"].as_str(), named.more.as_str()),
            (Some("aegis"), "be brief")
        );
    }

    #[test]
    fn the_expansion_says_which_prompt_ran_and_what_it_says() {
        let p = prompt(&[("repo", true), ("body", false), ("area", false)]);
        let args = arguments(&p, "aegis area=ui").unwrap();
        let result = json!({"messages": [
            {"role": "user", "content": {"type": "text", "text": "Write an issue for aegis."}},
            {"role": "user", "content": {"type": "image", "data": "x", "mimeType": "image/png"}}
        ]});
        let part = |c: &Value| c["text"].as_str().map(str::to_string).or(Some("[image]".into()));
        assert_eq!(
            expansion("/github_issue aegis area=ui ", "github", &p, &args, &result, &part),
            "/github_issue aegis area=ui\n[This runs the prompt issue of MCP server github, given repo: aegis; \
             area: ui. It says:]\nWrite an issue for aegis.\n\n[image]"
        );
        let talk = json!({"messages": [
            {"role": "user", "content": {"type": "text", "text": "Hi"}},
            {"role": "assistant", "content": {"type": "text", "text": "Hello"}}
        ]});
        let none = prompt(&[]);
        assert_eq!(
            expansion("/github_issue short", "github", &none, &arguments(&none, "short").unwrap(), &talk, &part),
            "/github_issue short\n[This runs the prompt issue of MCP server github. It says:]\n[user]\nHi\n\n\
             [assistant]\nHello\n[The user adds:]\nshort"
        );
        let long = json!({"messages": [{"role": "user", "content": {"type": "text", "text": "é".repeat(MAX_TEXT + 5)}}]});
        let e = expansion("/github_issue", "github", &none, &Given::default(), &long, &part);
        assert_eq!(e.matches('é').count(), MAX_TEXT);
        assert!(e.ends_with(&format!("[the prompt is cut here, at {MAX_TEXT} characters]")));
    }

    #[test]
    fn the_listing_shows_each_command_on_one_line() {
        let mut p = prompt(&[("repo", true), ("body", false)]);
        p.description =
            "File an issue. It goes to the tracker and is seen by everyone in the team there".into();
        let text = listing(&[("github".into(), p)]);
        assert_eq!(
            text,
            format!(
                "Prompts of the MCP servers (words after the command fill its arguments):\n\
                 /github_issue REPO [BODY] — {}",
                crate::skills::first_words(
                    "File an issue. It goes to the tracker and is seen by everyone in the team there"
                )
            )
        );
        assert_eq!(listing(&[]), "");
    }

    proptest! {
        /// Whatever follows a command: no panic, every argument given is a declared one,
        /// and the last argument's text is a piece of the message.
        #[test]
        fn any_text_is_read_without_panic(rest in "\\PC{0,60}", n in 0usize..4) {
            let names = ["a", "b", "c"];
            let p = prompt(&names[..n.min(3)].iter().map(|a| (*a, false)).collect::<Vec<_>>());
            if let Ok(given) = arguments(&p, &rest) {
                prop_assert!(rest.contains(&given.more));
                for (k, v) in &given.args {
                    prop_assert!(names.contains(&k.as_str()));
                    prop_assert!(rest.contains(v.as_str().unwrap()) || v.as_str().unwrap().is_empty());
                }
            }
        }

        /// Words without quotes or `=` come back as they were sent, one per argument.
        #[test]
        fn plain_words_come_back_as_sent(words in proptest::collection::vec("[a-z0-9.,!?'-]{1,8}", 3)) {
            let p = prompt(&[("a", true), ("b", true), ("c", true)]);
            let got = got(&p, &words.join(" "));
            prop_assert_eq!(got, pairs(&[("a", &words[0]), ("b", &words[1]), ("c", &words[2])]));
        }
    }
}
