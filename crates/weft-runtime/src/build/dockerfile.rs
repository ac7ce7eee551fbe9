//! A Dockerfile parser: parser directives (`# escape=`), comments, line continuations, JSON and
//! shell forms, `ARG` (before and after `FROM`) and `ENV` substitution (`$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR:+alternative}`), and errors that name the line. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

/// A parse error with the line it is about (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line of the Dockerfile.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dockerfile line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

type Parsed<T> = Result<T, ParseError>;

fn err<T>(line: usize, message: impl Into<String>) -> Parsed<T> {
    Err(ParseError { line, message: message.into() })
}

/// A command in shell form (run by the stage's SHELL) or exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `RUN make all`.
    Shell(String),
    /// `RUN ["make", "all"]`.
    Exec(Vec<String>),
}

/// One instruction after substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// Run a command in a build container.
    Run(Command),
    /// Copy from the context, another stage or an image.
    Copy {
        /// `--from=stage|image`.
        from: Option<String>,
        /// `--chown=user[:group]`.
        chown: Option<String>,
        /// `--chmod=MODE` (octal).
        chmod: Option<u32>,
        /// Sources.
        sources: Vec<String>,
        /// Destination.
        dest: String,
    },
    /// Like COPY; local tar archives are extracted.
    Add {
        /// `--chown=user[:group]`.
        chown: Option<String>,
        /// `--chmod=MODE` (octal).
        chmod: Option<u32>,
        /// Sources.
        sources: Vec<String>,
        /// Destination.
        dest: String,
    },
    /// Environment variables.
    Env(Vec<(String, String)>),
    /// A build argument and its default.
    Arg(String, Option<String>),
    /// Working directory.
    Workdir(String),
    /// Default command.
    Cmd(Command),
    /// Entrypoint.
    Entrypoint(Command),
    /// Ports (`80`, `53/udp`).
    Expose(Vec<String>),
    /// User.
    User(String),
    /// Labels.
    Label(Vec<(String, String)>),
    /// Volumes.
    Volume(Vec<String>),
    /// The shell for shell-form commands.
    Shell(Vec<String>),
    /// The stop signal.
    StopSignal(String),
    /// A health check (`HEALTHCHECK [OPTIONS] CMD ...`) or none (`HEALTHCHECK NONE`).
    Healthcheck(HealthcheckSpec),
    /// A trigger (`ONBUILD INSTRUCTION ...`, the instruction as written) kept in the image and
    /// run when another image is built FROM it.
    OnBuild(String),
}

/// `HEALTHCHECK`'s test and options, durations in nanoseconds as Docker stores them; an option
/// not given stays unset (the runtime's defaults apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthcheckSpec {
    /// `["NONE"]`, `["CMD", args...]` (exec form) or `["CMD-SHELL", command]` (shell form).
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Option<i64>,
    /// `--timeout`.
    pub timeout: Option<i64>,
    /// `--start-period`.
    pub start_period: Option<i64>,
    /// `--start-interval`.
    pub start_interval: Option<i64>,
    /// `--retries`.
    pub retries: Option<i64>,
}

/// Parses `HEALTHCHECK`'s arguments: options, then `NONE` or `CMD` in shell or exec form.
fn healthcheck(args: &str, line: usize) -> Parsed<HealthcheckSpec> {
    let mut spec = HealthcheckSpec::default();
    let mut rest = args.trim();
    while let Some(option) = rest.strip_prefix("--") {
        let (word, after) = option.split_once(char::is_whitespace).unwrap_or((option, ""));
        let Some((name, value)) = word.split_once('=') else {
            return err(line, format!("HEALTHCHECK --{word}: expected --{word}=VALUE"));
        };
        let duration = || -> Parsed<Option<i64>> {
            let d = crate::duration::parse(value)
                .map_err(|e| ParseError { line, message: format!("HEALTHCHECK --{name}: {e}") })?;
            Ok(Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
        };
        match name {
            "interval" => spec.interval = duration()?,
            "timeout" => spec.timeout = duration()?,
            "start-period" => spec.start_period = duration()?,
            "start-interval" => spec.start_interval = duration()?,
            "retries" => match value.parse::<i64>() {
                Ok(n) if n >= 0 => spec.retries = Some(n),
                _ => return err(line, format!("HEALTHCHECK --retries={value}: expected a number")),
            },
            _ => return err(line, format!("HEALTHCHECK: unknown option --{name}")),
        }
        rest = after.trim_start();
    }
    let (kind, command_args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    spec.test = match kind.to_ascii_uppercase().as_str() {
        "NONE" if command_args.trim().is_empty() => vec!["NONE".into()],
        "NONE" => return err(line, "HEALTHCHECK NONE takes no arguments"),
        "CMD" => match command(command_args, line, "HEALTHCHECK CMD")? {
            Command::Exec(list) => std::iter::once("CMD".to_string()).chain(list).collect(),
            Command::Shell(text) => vec!["CMD-SHELL".into(), text],
        },
        _ => return err(line, "HEALTHCHECK needs NONE or CMD after its options"),
    };
    Ok(spec)
}

/// An instruction with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Line of the Dockerfile where it starts.
    pub line: usize,
    /// The instruction as written (after continuation joining), for the layer cache and history.
    pub text: String,
    /// What it does.
    pub instruction: Instruction,
}

/// A build stage: `FROM base [AS name]` and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The base: an image reference or `scratch`.
    pub base: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Line of its FROM.
    pub line: usize,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Stages in order; the last is the image unless a target is chosen.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The index of the stage called `name`, or with that number.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < self.stages.len()))
    }
}

/// Joins continuation lines and drops comments; returns (first line number, text) pairs.
fn logical_lines(source: &str, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in source.lines().enumerate() {
        let number = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue; // comments, also inside a continued instruction
        }
        if current.is_none() && trimmed.is_empty() {
            continue;
        }
        let body = raw.trim_end();
        let (text, continues) = match body.strip_suffix(escape) {
            Some(rest) => (rest, true),
            None => (body, false),
        };
        match &mut current {
            Some((_, acc)) => acc.push_str(text),
            None => current = Some((number, text.to_string())),
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current.take());
    out
}

/// Reads parser directives at the top of the file; only `escape` is understood.
fn directives(source: &str, line: &mut usize) -> Parsed<char> {
    let mut escape = '\\';
    for raw in source.lines() {
        let Some(rest) = raw.trim().strip_prefix('#') else { break };
        let Some((key, value)) = rest.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(char::is_whitespace) || key.is_empty() {
            break;
        }
        *line += 1;
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => return err(*line, format!("invalid escape character {other:?}: must be \\ or `")),
            };
        }
    }
    Ok(escape)
}

/// Substitutes `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` from `vars`; `escape`
/// before `$` keeps it literal.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>, escape: char, line: usize) -> Parsed<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    // Inside single quotes nothing is expanded (Docker's shell-like lexer); the quotes stay for
    // the word splitting that follows.
    let mut single = false;
    let mut double = false;
    while i < chars.len() {
        let c = chars[i];
        if single {
            single = c != '\'';
            out.push(c);
            i += 1;
            continue;
        }
        if c == escape && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c == escape
            && let Some(next) = chars.get(i + 1)
        {
            // An escaped character (a quote among them) is left for the word splitting.
            out.push(c);
            out.push(*next);
            i += 2;
            continue;
        }
        if c == '\'' && !double {
            single = true;
        } else if c == '"' {
            double = !double;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let close = chars[i + 2..].iter().position(|c| *c == '}').map(|p| p + i + 2);
            let Some(close) = close else { return err(line, format!("missing '}}' in {text:?}")) };
            let inner: String = chars[i + 2..close].iter().collect();
            let (name, modifier) = match inner.find(':') {
                Some(p) => (&inner[..p], Some(&inner[p..])),
                None => (inner.as_str(), None),
            };
            if !valid_var(name) {
                return err(line, format!("bad substitution ${{{inner}}}"));
            }
            let value = vars.get(name).filter(|v| !v.is_empty());
            match modifier {
                None => out.push_str(vars.get(name).map(String::as_str).unwrap_or("")),
                Some(m) if m.starts_with(":-") => out.push_str(value.map(String::as_str).unwrap_or(&m[2..])),
                Some(m) if m.starts_with(":+") => {
                    if value.is_some() {
                        out.push_str(&m[2..]);
                    }
                }
                Some(m) => {
                    return err(line, format!("unsupported substitution modifier {m:?} in ${{{inner}}}"));
                }
            }
            i = close + 1;
            continue;
        }
        let name: String =
            chars[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            i += 1 + name.chars().count();
        }
    }
    Ok(out)
}

fn valid_var(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits on white space, keeping quoted strings together and removing the quotes.
fn words(text: &str, escape: char, line: usize) -> Parsed<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), c) if c == escape => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c == escape => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return err(line, format!("unterminated quote in {text:?}"));
    }
    if in_word {
        out.push(current);
    }
    Ok(out)
}

fn json_array(args: &str, line: usize) -> Parsed<Option<Vec<String>>> {
    let trimmed = args.trim();
    if !trimmed.starts_with('[') {
        return Ok(None);
    }
    // As Docker: what does not parse as a JSON array of strings is the shell form.
    let _ = line;
    Ok(serde_json::from_str::<Vec<String>>(trimmed).ok())
}

fn command(args: &str, line: usize, what: &str) -> Parsed<Command> {
    if args.trim().is_empty() {
        return err(line, format!("{what} needs a command"));
    }
    Ok(match json_array(args, line)? {
        Some(list) => Command::Exec(list),
        None => Command::Shell(args.trim().to_string()),
    })
}

fn pairs(args: &str, escape: char, line: usize, what: &str) -> Parsed<Vec<(String, String)>> {
    let list = words(args, escape, line)?;
    if list.is_empty() {
        return err(line, format!("{what} needs at least one key=value"));
    }
    if !list[0].contains('=') {
        // Legacy `ENV key value with spaces`.
        let (key, value) = args.trim().split_once(char::is_whitespace).unwrap_or((args.trim(), ""));
        if value.trim().is_empty() {
            return err(line, format!("{what} {key} needs a value"));
        }
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    list.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => err(line, format!("{what}: {w:?} is not key=value")),
        })
        .collect()
}

/// Parses a Dockerfile, substituting `build_args` (`--build-arg`) for declared ARGs.
pub fn parse(source: &str, build_args: &BTreeMap<String, String>) -> Parsed<Dockerfile> {
    parse_with_bases(source, build_args, &|_| None)
}

/// The `PATH` Docker gives a stage whose base image has none (`FROM scratch` included).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment a stage starts with: its base image's `Env` (or, for a stage built on an
/// earlier one, that stage's), with Docker's default `PATH` when it has none.
fn starting_env(env: Option<Vec<String>>) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = env
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    vars.entry("PATH".into()).or_insert_with(|| DEFAULT_PATH.into());
    vars
}

/// [`parse`], with `base_env` giving the `Env` of a base image by name (`None`: unknown), so that
/// `$PATH` and the other variables of the base image expand in the stage as Docker expands them.
pub fn parse_with_bases(
    source: &str,
    build_args: &BTreeMap<String, String>,
    base_env: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Parsed<Dockerfile> {
    let mut directive_lines = 0;
    let escape = directives(source, &mut directive_lines)?;
    let mut stages: Vec<Stage> = Vec::new();
    // ARGs before the first FROM: usable in FROM lines, and in stages that re-declare them.
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    // What substitution sees in the current stage: its environment (base image and ENV) and
    // its ARGs, ENV winning; and each finished stage's environment, for stages built on it.
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut env_vars: BTreeMap<String, String> = BTreeMap::new();
    let mut stage_envs: Vec<BTreeMap<String, String>> = Vec::new();
    for (line, text) in logical_lines(source, escape) {
        let trimmed = text.trim();
        let (word, args) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
        let keyword = word.to_ascii_uppercase();
        let args = args.trim();
        if keyword == "FROM" {
            let parts = words(&substitute(args, &global, escape, line)?, escape, line)?;
            let parts: Vec<&String> = parts.iter().filter(|p| !p.starts_with("--platform")).collect();
            let (base, name) = match parts.as_slice() {
                [base] => ((*base).clone(), None),
                [base, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    ((*base).clone(), Some((*name).clone()))
                }
                _ => return err(line, format!("FROM expects `image [AS name]`, got {args:?}")),
            };
            if base.is_empty() {
                return err(line, "FROM needs an image (or scratch)");
            }
            if let Some(n) = &name
                && stages.iter().any(|s| s.name.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(n)))
            {
                return err(line, format!("duplicate stage name {n:?}"));
            }
            if !stages.is_empty() {
                stage_envs.push(std::mem::take(&mut env_vars));
            }
            let earlier =
                stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&base)));
            env_vars = match earlier {
                Some(i) => stage_envs[i].clone(),
                None if base == "scratch" => starting_env(None),
                None => starting_env(base_env(&base)),
            };
            vars = env_vars.clone();
            stages.push(Stage { base, name, line, steps: Vec::new() });
            continue;
        }
        if keyword == "ARG" {
            let (name, default) = match args.split_once('=') {
                Some((n, d)) => (n.trim().to_string(), Some(words(d, escape, line)?.join(" "))),
                None => (args.to_string(), None),
            };
            if !valid_var(&name) {
                return err(line, format!("ARG needs a valid name, got {name:?}"));
            }
            if stages.is_empty() {
                if let Some(v) = build_args.get(&name).cloned().or(default) {
                    global.insert(name, v);
                }
                continue;
            }
            // Inside a stage: a build argument wins, then the default given here, then the value
            // of a global ARG of the same name.
            let value = build_args.get(&name).cloned().or(default).or_else(|| global.get(&name).cloned());
            // ENV always wins over an ARG of the same name.
            if let Some(v) = &value
                && !env_vars.contains_key(&name)
            {
                vars.insert(name.clone(), v.clone());
            }
            let stage = stages.last_mut().expect("inside a stage");
            stage.steps.push(Step {
                line,
                text: trimmed.to_string(),
                instruction: Instruction::Arg(name, value),
            });
            continue;
        }
        let Some(stage) = stages.last_mut() else {
            return err(line, format!("{word} before the first FROM (only ARG may come before FROM)"));
        };
        let sub = |s: &str, vars: &BTreeMap<String, String>| substitute(s, vars, escape, line);
        let instruction = match keyword.as_str() {
            "RUN" => {
                if let Some(flag) = args.strip_prefix("--") {
                    let name = flag.split(['=', ' ']).next().unwrap_or(flag);
                    return err(line, format!("RUN --{name} is not supported (a BuildKit flag)"));
                }
                Instruction::Run(command(args, line, "RUN")?)
            }
            "CMD" => Instruction::Cmd(command(args, line, "CMD")?),
            "ENTRYPOINT" => Instruction::Entrypoint(command(args, line, "ENTRYPOINT")?),
            "SHELL" => match json_array(args, line)? {
                Some(list) if !list.is_empty() => Instruction::Shell(list),
                _ => return err(line, "SHELL needs a JSON array, e.g. [\"/bin/sh\", \"-c\"]"),
            },
            "COPY" | "ADD" => {
                let mut list = match json_array(&sub(args, &vars)?, line)? {
                    Some(l) => l,
                    None => words(&sub(args, &vars)?, escape, line)?,
                };
                let mut from = None;
                let mut chown = None;
                let mut chmod = None;
                while list.first().is_some_and(|w| w.starts_with("--")) {
                    let flag = list.remove(0);
                    if let Some(v) = flag.strip_prefix("--from=") {
                        if keyword == "ADD" {
                            return err(line, "ADD does not take --from; use COPY --from");
                        }
                        from = Some(v.to_string());
                    } else if let Some(v) = flag.strip_prefix("--chown=") {
                        chown = Some(v.to_string());
                    } else if let Some(v) = flag.strip_prefix("--chmod=") {
                        match u32::from_str_radix(v, 8) {
                            Ok(m) if m <= 0o7777 => chmod = Some(m),
                            _ => {
                                return err(
                                    line,
                                    format!("{keyword} --chmod={v}: expected an octal mode such as 0644"),
                                );
                            }
                        }
                    } else {
                        return err(line, format!("unsupported {keyword} flag {flag:?}"));
                    }
                }
                if list.len() < 2 {
                    return err(line, format!("{keyword} needs at least one source and a destination"));
                }
                let dest = list.pop().expect("checked");
                if keyword == "COPY" {
                    Instruction::Copy { from, chown, chmod, sources: list, dest }
                } else {
                    Instruction::Add { chown, chmod, sources: list, dest }
                }
            }
            "ENV" => {
                let list = pairs(&sub(args, &vars)?, escape, line, "ENV")?;
                for (k, v) in &list {
                    if !valid_var(k) {
                        return err(line, format!("ENV: invalid name {k:?}"));
                    }
                    vars.insert(k.clone(), v.clone());
                    env_vars.insert(k.clone(), v.clone());
                }
                Instruction::Env(list)
            }
            "LABEL" => Instruction::Label(pairs(&sub(args, &vars)?, escape, line, "LABEL")?),
            "MAINTAINER" => Instruction::Label(vec![("maintainer".into(), args.to_string())]),
            "WORKDIR" => {
                let dir = sub(args, &vars)?;
                if dir.is_empty() {
                    return err(line, "WORKDIR needs a path");
                }
                Instruction::Workdir(dir)
            }
            "USER" => {
                let user = sub(args, &vars)?;
                if user.is_empty() || user.contains(char::is_whitespace) {
                    return err(line, "USER needs one user[:group]");
                }
                Instruction::User(user)
            }
            "EXPOSE" => {
                let ports = words(&sub(args, &vars)?, escape, line)?;
                let mut expanded = Vec::new();
                for p in &ports {
                    let (range, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    let port = |t: &str| t.parse::<u16>().ok().filter(|n| *n > 0);
                    match (port(low), port(high)) {
                        (Some(l), Some(h)) if l <= h && matches!(proto.as_str(), "tcp" | "udp" | "sctp") => {
                            expanded.extend((l..=h).map(|n| format!("{n}/{proto}")));
                        }
                        _ => return err(line, format!("EXPOSE: invalid port {p:?}")),
                    }
                }
                if expanded.is_empty() {
                    return err(line, "EXPOSE needs a port");
                }
                Instruction::Expose(expanded)
            }
            "VOLUME" => {
                let s = sub(args, &vars)?;
                let list = match json_array(&s, line)? {
                    Some(l) => l,
                    None => words(&s, escape, line)?,
                };
                if list.is_empty() {
                    return err(line, "VOLUME needs a path");
                }
                Instruction::Volume(list)
            }
            "STOPSIGNAL" => Instruction::StopSignal(sub(args, &vars)?),
            "HEALTHCHECK" => Instruction::Healthcheck(healthcheck(args, line)?),
            "ONBUILD" => {
                let (inner, _) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
                match inner.to_ascii_uppercase().as_str() {
                    "" => return err(line, "ONBUILD needs an instruction"),
                    "ONBUILD" => return err(line, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
                    "FROM" | "MAINTAINER" => {
                        return err(
                            line,
                            format!("{} isn't allowed as an ONBUILD trigger", inner.to_ascii_uppercase()),
                        );
                    }
                    _ => {}
                }
                // Stored as written; expanded and run when an image is built FROM this one.
                Instruction::OnBuild(args.to_string())
            }
            _ => return err(line, format!("unknown instruction: {}", word.to_ascii_uppercase())),
        };
        stage.steps.push(Step { line, text: trimmed.to_string(), instruction });
    }
    if stages.is_empty() {
        return err(directive_lines.max(1), "no FROM instruction: a Dockerfile needs at least one stage");
    }
    Ok(Dockerfile { stages })
}
