//! The build context: `.dockerignore` parsed and matched by Docker's rules, and COPY/ADD sources
//! resolved inside the directory they are read from, refusing anything that would escape it.
//!
//! Docker's rules, as its `ignorefile` reader and pattern matcher apply them:
//! - a line starting with `#` (in the first column) is a comment, blank lines are skipped, the
//!   rest is trimmed;
//! - `!` makes an exception: a later matching exception re-includes a path an earlier pattern
//!   excluded (the last matching pattern wins);
//! - patterns are cleaned like paths (`.` and empty segments dropped, `..` folded, a trailing `/`
//!   dropped) and a leading `/` is dropped, so `/foo`, `foo/` and `./foo` are `foo`;
//! - `*` matches any run of characters but `/`, `?` one character but `/`, `[a-z]` / `[^a-z]` a
//!   class, `\` escapes the next character, and a `**` segment matches any number of
//!   directories, none included;
//! - a path is excluded when a pattern matches it or any directory above it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::{Result, RuntimeError};

/// One `.dockerignore` line after cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// A `!` exception.
    exception: bool,
    /// The pattern's segments, `/`-separated.
    segments: Vec<String>,
}

/// The patterns of a `.dockerignore`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub(crate) fn parse(text: &str) -> Ignore {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rules = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                Rule { exception, segments: clean(pattern) }
            })
            .collect();
        Ignore { rules }
    }

    /// Reads `context/.dockerignore`; no file means nothing is ignored.
    pub(crate) fn load(context: &Path) -> Result<Ignore> {
        let path = context.join(".dockerignore");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Ignore::parse(&text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Ignore::default()),
            Err(e) => Err(RuntimeError::io("read", path)(e)),
        }
    }

    /// Whether `rel` (relative to the context), or a directory above it, is excluded.
    pub(crate) fn excluded(&self, rel: &Path) -> bool {
        let parts: Vec<String> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut excluded = false;
        for rule in &self.rules {
            if (1..=parts.len()).any(|n| glob(&rule.segments, &parts[..n])) {
                excluded = !rule.exception;
            }
        }
        excluded
    }
}

/// A pattern cleaned like Go's `filepath.Clean`, leading `/` dropped, split into segments.
fn clean(pattern: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seg in pattern.split('/') {
        match seg {
            "" | "." => {}
            ".." if out.last().is_some_and(|s| s != "..") => {
                out.pop();
            }
            // `..` above the start of the pattern: it can never match a context path.
            _ => out.push(seg.to_string()),
        }
    }
    out
}

/// Whether the segments of `pattern` match the segments of `path` exactly.
fn glob(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => (0..=path.len()).any(|i| glob(&pattern[1..], &path[i..])),
        (Some(p), Some(seg)) => matches_name(p, seg) && glob(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Whether one path segment `name` matches the wildcard pattern `pattern` (`*`, `?`, `[...]`,
/// `\` escapes; no `/` in either).
pub(crate) fn matches_name(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    segment(&p, &s)
}

fn segment(p: &[char], s: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('*', rest)) => {
            // Consecutive stars are one star.
            let rest = &rest[rest.iter().take_while(|c| **c == '*').count()..];
            (0..=s.len()).any(|i| segment(rest, &s[i..]))
        }
        Some(('?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
        Some(('[', rest)) => match class(rest) {
            Some((hit, after)) => s.first().is_some_and(|c| hit(*c)) && segment(after, &s[1..]),
            None => s.first() == Some(&'[') && segment(rest, &s[1..]),
        },
        Some(('\\', rest)) if !rest.is_empty() => s.first() == Some(&rest[0]) && segment(&rest[1..], &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && segment(rest, &s[1..]),
    }
}

/// A character class after its `[`: a predicate and the pattern after its `]`, or `None` when it
/// is not closed (then the `[` is literal).
fn class(p: &[char]) -> Option<(impl Fn(char) -> bool, &[char])> {
    let (negate, mut i) = if p.first() == Some(&'^') { (true, 1) } else { (false, 0) };
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        let (lo, next) = if c == '\\' { (*p.get(i + 1)?, i + 2) } else { (c, i + 1) };
        i = next;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
            let (hi, next) = if p[i + 1] == '\\' { (*p.get(i + 2)?, i + 3) } else { (p[i + 1], i + 2) };
            ranges.push((lo, hi));
            i = next;
        } else {
            ranges.push((lo, lo));
        }
    }
    let hit = move |c: char| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != negate;
    Some((hit, &p[i + 1..]))
}

/// Why a COPY/ADD source was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The source is (or resolves, through `..` or a symlink, to) something outside the root.
    #[error("{0} is outside the build context")]
    Outside(String),
    /// Nothing of that name.
    #[error("{0}: no such file or directory in the build context")]
    Missing(String),
    /// A wildcard that matched nothing.
    #[error("{0}: no source files were specified")]
    NoMatch(String),
    /// Excluded by `.dockerignore`.
    #[error("{0} is excluded by .dockerignore")]
    Excluded(String),
    /// The root itself could not be read.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl SourceError {
    /// The error as a build error at Dockerfile `line` (I/O errors stay what they are).
    pub(crate) fn at(self, line: usize) -> RuntimeError {
        match self {
            SourceError::Runtime(e) => e,
            other => RuntimeError::Build { line, message: other.to_string() },
        }
    }
}

/// A resolved source: where it is, and its path relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// The path to read.
    pub(crate) path: PathBuf,
    /// The path relative to the root (what `.dockerignore` and the cache key see).
    pub(crate) rel: PathBuf,
}

/// Where COPY/ADD sources are read from: the build context, whose `.dockerignore` applies, or a
/// stage's or image's file system, where nothing is ignored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceRoot<'a> {
    root: &'a Path,
    ignore: Option<&'a Ignore>,
}

impl<'a> SourceRoot<'a> {
    /// The build context at `root`, filtered by `ignore`.
    pub(crate) fn context(root: &'a Path, ignore: &'a Ignore) -> SourceRoot<'a> {
        SourceRoot { root, ignore: Some(ignore) }
    }

    /// Another file system (a stage or an image), with nothing ignored.
    pub(crate) fn other(root: &'a Path) -> SourceRoot<'a> {
        SourceRoot { root, ignore: None }
    }

    /// Whether `rel` is left out (only ever in the build context).
    pub(crate) fn skips(&self, rel: &Path) -> bool {
        self.ignore.is_some_and(|i| i.excluded(rel))
    }

    /// Resolves a COPY/ADD source (a wildcard in its last segment expands, sorted), refusing
    /// anything outside the root or excluded.
    pub(crate) fn resolve(&self, src: &str) -> Result<Vec<Source>, SourceError> {
        let mut rel = PathBuf::new();
        for c in Path::new(src).components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::ParentDir if !rel.pop() => return Err(SourceError::Outside(src.into())),
                _ => {}
            }
        }
        let root_real = fs::canonicalize(self.root).map_err(RuntimeError::io("open", self.root))?;
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let candidates: Vec<PathBuf> = if name.contains(['*', '?', '[']) {
            let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let entries = fs::read_dir(self.root.join(&dir)).map_err(|_| SourceError::Missing(src.into()))?;
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| matches_name(&name, n)))
                .map(|e| dir.join(e.file_name()))
                .collect();
            found.sort();
            found
        } else {
            vec![rel]
        };
        let mut out = Vec::new();
        for rel in candidates {
            let path = self.root.join(&rel);
            let real = fs::canonicalize(&path).map_err(|_| SourceError::Missing(src.into()))?;
            if !real.starts_with(&root_real) {
                return Err(SourceError::Outside(src.into()));
            }
            if self.skips(&rel) {
                return Err(SourceError::Excluded(src.into()));
            }
            out.push(Source { path, rel });
        }
        if out.is_empty() {
            return Err(SourceError::NoMatch(src.into()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns_follow_dockers_rules() {
        // (patterns, path, excluded)
        let cases: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("foo", "foo/bar/baz", true),
            ("foo", "foobar", false),
            ("foo", "a/foo", false),
            ("/foo", "foo/x", true),
            ("./foo", "foo", true),
            ("foo/", "foo/x", true),
            ("foo//bar/", "foo/bar", true),
            ("a/../foo", "foo", true),
            ("*.txt", "a.txt", true),
            ("*.txt", "dir/a.txt", false),
            ("*/*.txt", "dir/a.txt", true),
            ("**/*.txt", "a.txt", true),
            ("**/*.txt", "x/y/z/a.txt", true),
            ("**/*.txt", "x/y/a.md", false),
            ("x/**/z", "x/z", true),
            ("x/**/z", "x/a/b/z/c", true),
            ("x/**", "x/a", true),
            ("**", "anything/at/all", true),
            ("?.md", "a.md", true),
            ("?.md", "ab.md", false),
            ("[a-c].md", "b.md", true),
            ("[a-c].md", "d.md", false),
            ("[^a-c].md", "d.md", true),
            ("\\*.md", "*.md", true),
            ("\\*.md", "a.md", false),
            ("*.log\n!keep.log", "keep.log", false),
            ("*.log\n!keep.log", "drop.log", true),
            ("!keep.log\n*.log", "keep.log", true),
            ("docs\n!docs/README.md", "docs/README.md", false),
            ("docs\n!docs/README.md", "docs/other.md", true),
            ("# a comment\nfoo", "# a comment", false),
            ("#foo", "#foo", false),
            (" foo \n\n", "foo", true),
            ("\u{feff}foo", "foo", true),
            ("", "foo", false),
            ("../foo", "foo", false),
        ];
        for (patterns, path, want) in cases {
            let ignore = Ignore::parse(patterns);
            assert_eq!(ignore.excluded(Path::new(path)), *want, "{patterns:?} on {path:?}");
        }
    }

    #[test]
    fn name_wildcards() {
        assert!(matches_name("*", ""));
        assert!(matches_name("a**b", "axxb"));
        assert!(matches_name("[]]", "]"));
        assert!(matches_name("[a-]", "-"));
        assert!(matches_name("[", "["));
        assert!(!matches_name("a?", "a"));
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-context-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn sources_stay_inside_the_root_and_honour_dockerignore() {
        let dir = temp_dir("sources");
        let ctx = dir.join("ctx");
        fs::create_dir_all(ctx.join("sub")).unwrap();
        fs::write(dir.join("secret"), "s").unwrap();
        for name in ["a.txt", "b.txt", "c.md", "sub/x", "skip.txt"] {
            fs::write(ctx.join(name), name).unwrap();
        }
        std::os::unix::fs::symlink("../secret", ctx.join("link")).unwrap();
        let ignore = Ignore::parse("skip.txt\n");
        let root = SourceRoot::context(&ctx, &ignore);

        let rels =
            |src: &str| -> Vec<PathBuf> { root.resolve(src).unwrap().into_iter().map(|s| s.rel).collect() };
        assert_eq!(rels("./sub/../a.txt"), [PathBuf::from("a.txt")]);
        assert_eq!(rels("/sub/x"), [PathBuf::from("sub/x")]);
        assert_eq!(rels("[ab].txt"), [PathBuf::from("a.txt"), PathBuf::from("b.txt")]);
        assert!(matches!(root.resolve("*.txt"), Err(SourceError::Excluded(_))));
        assert!(matches!(root.resolve("../secret"), Err(SourceError::Outside(_))));
        assert!(matches!(root.resolve("link"), Err(SourceError::Outside(_))));
        assert!(matches!(root.resolve("nope"), Err(SourceError::Missing(_))));
        assert!(matches!(root.resolve("*.none"), Err(SourceError::NoMatch(_))));
        let err = root.resolve("../secret").unwrap_err().at(7);
        assert!(matches!(err, RuntimeError::Build { line: 7, .. }), "{err}");
        assert!(err.to_string().contains("outside the build context"));

        // Another stage's file system ignores nothing.
        assert_eq!(SourceRoot::other(&ctx).resolve("skip.txt").unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_dockerignore_ignores_nothing() {
        let dir = temp_dir("load");
        assert_eq!(Ignore::load(&dir).unwrap(), Ignore::default());
        fs::write(dir.join(".dockerignore"), "x\n").unwrap();
        assert!(Ignore::load(&dir).unwrap().excluded(Path::new("x")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
