//! The builder's behaviour as a table of cases: every `tests/cases/*.toml` is a Dockerfile, its
//! context and what Docker's classic builder made of it (observed on a real Docker by
//! `tests/cases/oracle.sh`, each case naming the sentence of Docker's Dockerfile reference it
//! checks; the format is in `tests/cases/README.md`). weft's builder must make the same file tree
//! and image config, or fail where Docker fails. Cases with a RUN step need root; the others run
//! without it. Every case is built, and every difference of every case is reported at once.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;
use serde_json::Value;
use weft_runtime::build::builder::{BuildOptions, Builder};
use weft_runtime::container::Runtime;
use weft_runtime::image::{ImageRecord, ImageStore};

static N: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    reference: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    needs_run: bool,
    #[serde(default)]
    builder: String,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    dockerfile: String,
    #[serde(default)]
    context: Vec<ContextEntry>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextEntry {
    path: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    entries: Vec<TarEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TarEntry {
    path: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    owner: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    path: Vec<PathExpect>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    history: Option<HistoryExpect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathExpect {
    path: String,
    kind: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryExpect {
    from: String,
    added: usize,
    added_layers: usize,
    #[serde(default)]
    created: bool,
}

fn octal(text: &str) -> u32 {
    u32::from_str_radix(text, 8).unwrap_or_else(|_| panic!("bad octal mode {text:?}"))
}

/// Writes the case's context (and `dockerfile` as `Dockerfile`) into a fresh directory.
fn make_context(dir: &Path, case: &Case, dockerfile: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in &case.context {
        let path = dir.join(&entry.path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match entry.kind.as_deref().unwrap_or("file") {
            "file" => {
                fs::write(&path, entry.content.as_deref().unwrap_or("")).unwrap();
                fs::set_permissions(
                    &path,
                    fs::Permissions::from_mode(octal(entry.mode.as_deref().unwrap_or("0644"))),
                )
                .unwrap();
            }
            "dir" => {
                fs::create_dir_all(&path).unwrap();
                fs::set_permissions(
                    &path,
                    fs::Permissions::from_mode(octal(entry.mode.as_deref().unwrap_or("0755"))),
                )
                .unwrap();
            }
            "symlink" => std::os::unix::fs::symlink(entry.target.as_deref().unwrap(), &path).unwrap(),
            "targz" => {
                let mut archive = tar::Builder::new(Vec::new());
                for e in &entry.entries {
                    let (uid, gid) = e.owner.as_deref().unwrap_or("0:0").split_once(':').unwrap();
                    let mut header = tar::Header::new_gnu();
                    header.set_uid(uid.parse().unwrap());
                    header.set_gid(gid.parse().unwrap());
                    header.set_mtime(1_700_000_000);
                    let content = e.content.as_deref().unwrap_or("");
                    if e.kind.as_deref() == Some("dir") {
                        header.set_entry_type(tar::EntryType::Directory);
                        header.set_mode(octal(e.mode.as_deref().unwrap_or("0755")));
                        header.set_size(0);
                        archive.append_data(&mut header, &e.path, std::io::empty()).unwrap();
                    } else {
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_mode(octal(e.mode.as_deref().unwrap_or("0644")));
                        header.set_size(content.len() as u64);
                        archive.append_data(&mut header, &e.path, content.as_bytes()).unwrap();
                    }
                }
                let tar_bytes = archive.into_inner().unwrap();
                let mut gz = flate2::write::GzEncoder::new(
                    fs::File::create(&path).unwrap(),
                    flate2::Compression::fast(),
                );
                gz.write_all(&tar_bytes).unwrap();
                gz.finish().unwrap();
            }
            other => panic!("unknown context kind {other:?}"),
        }
    }
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::set_permissions(dir.join("Dockerfile"), fs::Permissions::from_mode(0o644)).unwrap();
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    let mut value = [0u8; 1];
    // SAFETY: reading one byte of an xattr of a NUL-terminated path into a local buffer.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Where `path` is in the union of `layers` (bottom first), as overlayfs would show it: the
/// top-most layer that has it, unless a whiteout, an opaque directory or a non-directory above
/// hides it.
fn lookup(layers: &[PathBuf], path: &str) -> Option<PathBuf> {
    let parts: Vec<&std::ffi::OsStr> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return layers.last().cloned();
    }
    for layer in layers.iter().rev() {
        let mut cur = layer.clone();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            let Ok(meta) = fs::symlink_metadata(&cur) else {
                // Not in this layer; an opaque directory on the way hides the lower ones.
                let parent = cur.parent().unwrap();
                if i > 0 && is_opaque(parent) {
                    return None;
                }
                break;
            };
            if is_whiteout(&meta) {
                return None;
            }
            if i == parts.len() - 1 {
                return Some(cur);
            }
            if !meta.is_dir() {
                return None;
            }
        }
    }
    None
}

/// What differs between the built image and the case's expectations.
fn check_image(store: &ImageStore, image: &ImageRecord, expect: &Expect) -> Vec<String> {
    let mut problems = Vec::new();
    let layers = store.layer_dirs(image).unwrap();
    for want in &expect.path {
        let found = lookup(&layers, &want.path);
        let what = &want.path;
        let Some(real) = found else {
            if want.kind != "absent" {
                problems.push(format!("{what}: missing, expected a {}", want.kind));
            }
            continue;
        };
        let meta = fs::symlink_metadata(&real).unwrap();
        let kind = if meta.file_type().is_symlink() {
            "symlink"
        } else if meta.is_dir() {
            "dir"
        } else if meta.is_file() {
            "file"
        } else {
            "other"
        };
        if kind != want.kind {
            problems.push(format!("{what}: a {kind}, expected {}", want.kind));
            continue;
        }
        if let Some(content) = &want.content {
            let got = fs::read(&real).unwrap();
            if got != content.as_bytes() {
                problems.push(format!(
                    "{what}: content {:?}, expected {content:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
        }
        if let Some(mode) = &want.mode {
            let got = meta.mode() & 0o7777;
            if got != octal(mode) {
                problems.push(format!("{what}: mode {got:04o}, expected {mode}"));
            }
        }
        if let Some(owner) = &want.owner {
            let got = format!("{}:{}", meta.uid(), meta.gid());
            if &got != owner {
                problems.push(format!("{what}: owner {got}, expected {owner}"));
            }
        }
        if let Some(target) = &want.target {
            let got = fs::read_link(&real).unwrap();
            if got != Path::new(target) {
                problems.push(format!("{what}: symlink to {}, expected {target}", got.display()));
            }
        }
    }
    let config = image.runtime_config();
    for (key, want) in &expect.config {
        let got = &config[key.as_str()];
        let want: Value = serde_json::to_value(want).unwrap();
        let same = match key.as_str() {
            "ExposedPorts" | "Volumes" => {
                let mut got_keys: Vec<&String> =
                    got.as_object().map(|m| m.keys().collect()).unwrap_or_default();
                got_keys.sort();
                let mut want_keys: Vec<String> =
                    want.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                want_keys.sort();
                got_keys.into_iter().cloned().collect::<Vec<_>>() == want_keys
            }
            "Healthcheck" => {
                let field =
                    |v: &Value, k: &str| v.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(Value::from(0));
                ["Interval", "Timeout", "StartPeriod", "Retries"]
                    .iter()
                    .all(|k| field(got, k) == field(&want, k))
                    && got.get("Test") == want.get("Test")
            }
            _ => match &want {
                Value::Array(list) if list.is_empty() => {
                    got.is_null() || got.as_array().is_some_and(Vec::is_empty)
                }
                Value::String(s) if s.is_empty() => got.is_null() || got.as_str() == Some(""),
                Value::Object(map) if map.is_empty() => {
                    got.is_null() || got.as_object().is_some_and(|m| m.is_empty())
                }
                _ => *got == want,
            },
        };
        if !same {
            problems.push(format!("config {key}: {got}, expected {want}"));
        }
    }
    if let Some(h) = &expect.history {
        let base = store.get(&h.from).unwrap();
        let base_len = base.config["history"].as_array().map_or(0, Vec::len).max(base.diff_ids.len());
        let history = image.config["history"].as_array().cloned().unwrap_or_default();
        let added = history.len().saturating_sub(base_len);
        let added_layers = image.diff_ids.len() - base.diff_ids.len();
        if added != h.added || added_layers != h.added_layers {
            problems.push(format!(
                "history: {added} entries and {added_layers} layers added, expected {} and {}",
                h.added, h.added_layers
            ));
        }
        let new = &history[history.len().saturating_sub(added)..];
        let with_layers = new.iter().filter(|e| !e["empty_layer"].as_bool().unwrap_or(false)).count();
        if with_layers != added_layers {
            problems.push(format!(
                "history: {with_layers} new entries with layers for {added_layers} new layers"
            ));
        }
        if h.created
            && (image.config["created"].as_str().is_none_or(str::is_empty)
                || new.iter().any(|e| e["created"].as_str().is_none_or(str::is_empty)))
        {
            problems.push("history: the image or a new entry has no created time".into());
        }
    }
    problems
}

/// Builds one case; what differs from Docker's result, if anything.
fn run_case(dir: &Path, case: &Case) -> Vec<String> {
    let store = ImageStore::open(dir.join("images")).unwrap();
    store.import(&weft_test_images::busybox_save_dir(dir), None).unwrap();
    let runtime = Runtime::new(dir, env!("CARGO_BIN_EXE_weft-shim")).unwrap();
    let builder = Builder::new(&store, &runtime);
    let build = |dockerfile: &str, tag: &str| {
        let ctx = dir.join(format!("ctx-{tag}"));
        make_context(&ctx, case, dockerfile);
        let options = BuildOptions {
            context: ctx,
            tags: vec![tag.to_string()],
            build_args: case.build_args.clone(),
            target: case.target.clone(),
            no_cache: true,
            ..BuildOptions::default()
        };
        builder.build(&options)
    };
    if let Some(parent) = &case.parent
        && let Err(e) = build(parent, "parent:latest")
    {
        return vec![format!("the parent failed to build: {e}")];
    }
    match (build(&case.dockerfile, "case:latest"), &case.error) {
        (Err(e), Some(want)) => {
            let text = e.to_string().to_lowercase();
            if text.contains(&want.to_lowercase()) {
                vec![]
            } else {
                vec![format!("failed with {e:?}, expected an error containing {want:?}")]
            }
        }
        (Err(e), None) => vec![format!("failed: {e}")],
        (Ok(_), Some(want)) => vec![format!("built, but Docker fails with {want:?}")],
        (Ok(report), None) => check_image(&store, &report.image, &case.expect),
    }
}

#[test]
fn every_case_builds_as_dockers_classic_builder_does() {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<PathBuf> = fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the table has {} cases", files.len());
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let only = std::env::var("WEFT_CASE").ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let case: Case = toml::from_str(&fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if case.needs_run && !root {
            eprintln!("{name}: skipped (a RUN step needs root)");
            continue;
        }
        let _ = (&case.note, &case.builder);
        let dir = std::env::temp_dir().join(format!(
            "weft-case-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let problems = run_case(&dir, &case);
        let _ = fs::remove_dir_all(&dir);
        ran += 1;
        if !problems.is_empty() {
            failed.push(format!("{name}\n  reference: {}\n  - {}", case.reference, problems.join("\n  - ")));
        }
    }
    eprintln!("{ran} cases built, {} differ from Docker", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {ran} cases differ from Docker's classic builder:\n\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}
