//! No crate of the workspace has a circle of imports between its modules: layers point one way
//! (wire -> domain -> libraries in weftd; one operation per module in the runtime). Reads the
//! sources as text; a reference to an ancestor module (its `crate::Result`, say) is not counted,
//! since the ancestor only declares the child.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`container::runtime`) of a source file under `src`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b` and `super::x` path in `text`, as module paths relative to the crate.
fn references(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for line in text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        for (start, prefix) in [("crate::", None), ("super::", Some(()))] {
            let mut rest = line;
            while let Some(i) = rest.find(start) {
                let after = &rest[i + start.len()..];
                let path: String =
                    after.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                let mut parts: Vec<String> =
                    if prefix.is_some() { me[..me.len().saturating_sub(1)].to_vec() } else { Vec::new() };
                parts.extend(path.split("::").filter(|p| !p.is_empty()).map(String::from));
                found.push(parts);
                rest = &after[path.len().min(after.len())..];
            }
        }
    }
    found
}

fn cycles_in(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let me = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for reference in references(&text, &me) {
            // The longest module the path names (the rest is an item inside it).
            let target = (0..=reference.len())
                .rev()
                .map(|n| reference[..n].to_vec())
                .find(|p| modules.contains(p))
                .unwrap_or_default();
            let is_ancestor = me.starts_with(&target);
            if !is_ancestor && target != me {
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a back edge.
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let circle: Vec<String> = stack[at..].iter().chain([node]).map(|m| m.join("::")).collect();
            found.push(circle.join(" -> "));
            return;
        }
        if !done.insert(node.clone()) {
            return;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, found);
        }
        stack.pop();
    }
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_crate_has_a_circle_of_imports() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = entry.path().join("src");
        if src.is_dir() {
            for circle in cycles_in(&src) {
                all.push(format!("{}: {circle}", entry.file_name().to_string_lossy()));
            }
        }
    }
    assert!(all.is_empty(), "circles of imports:\n{}", all.join("\n"));
}

#[test]
fn no_code_matches_on_a_status_message() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    sources(&root.join("crates"), &mut files);
    sources(&root.join("tests/src"), &mut files);
    let needle = [".message()", ".contains("].concat();
    let hits: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(&needle))
        .map(|f| f.display().to_string())
        .collect();
    assert!(hits.is_empty(), "decide by the Status' reason, not its text: {hits:?}");
}
