//! The builder: runs a parsed Dockerfile's stages against the image store and runtime. Every
//! RUN executes in a build container on the stage's current layers and its writable layer becomes
//! an image layer; COPY and ADD write layers straight from the context (or another stage); other
//! instructions only change the image config. A layer cache keyed by parent, instruction and (for
//! COPY/ADD) the content of what is copied reuses layers until the first miss.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::dockerfile::{Command, Dockerfile, Instruction, parse};
use crate::container::{ContainerSpec, NetworkMode, Runtime};
use crate::image::{Digest, ImageRecord, ImageStore};
use crate::{Result, RuntimeError};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (`-f`); `context/Dockerfile` when `None`.
    pub dockerfile: Option<PathBuf>,
    /// Names for the result.
    pub tags: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Stop at this stage (`--target`).
    pub target: Option<String>,
    /// Ignore the layer cache.
    pub no_cache: bool,
    /// Give RUN the host's network (else only loopback).
    pub network_host: bool,
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// Stage index.
    pub stage: usize,
    /// Dockerfile line.
    pub line: usize,
    /// The instruction.
    pub text: String,
    /// Whether its layer came from the cache (always false for metadata-only steps).
    pub cached: bool,
    /// Whether it made a layer.
    pub layer: bool,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image.
    pub image: ImageRecord,
    /// Every step that ran, in order.
    pub steps: Vec<StepReport>,
    /// How many RUN instructions were executed (not taken from the cache).
    pub runs_executed: usize,
}

/// The state of a stage while it is built.
#[derive(Debug, Clone)]
struct StageState {
    diff_ids: Vec<String>,
    config: Value,
    history: Vec<Value>,
    key: String,
    /// ARG values in scope, passed to RUN as environment.
    args: BTreeMap<String, String>,
}

fn build_err(line: usize, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Build { line, message: message.into() }
}

fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// `.dockerignore` patterns: `*`, `?`, `**`, and `!` exceptions; the last match wins.
#[derive(Debug, Default)]
struct Ignore(Vec<(bool, Vec<String>)>);

fn glob(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => (0..=path.len()).any(|i| glob(&pattern[1..], &path[i..])),
        (Some(p), Some(seg)) => segment(p.as_bytes(), seg.as_bytes()) && glob(&pattern[1..], &path[1..]),
        _ => false,
    }
}

fn segment(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
        (Some(b'?'), Some(_)) => segment(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => segment(&p[1..], &s[1..]),
        _ => false,
    }
}

impl Ignore {
    fn load(context: &Path) -> Ignore {
        let text = fs::read_to_string(context.join(".dockerignore")).unwrap_or_default();
        Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (negate, pat) = match l.strip_prefix('!') {
                        Some(rest) => (true, rest),
                        None => (false, l),
                    };
                    let parts = pat
                        .trim_matches('/')
                        .split('/')
                        .filter(|p| !p.is_empty() && *p != ".")
                        .map(String::from)
                        .collect();
                    (negate, parts)
                })
                .collect(),
        )
    }

    /// Whether `rel` (or a directory above it) is excluded.
    fn excluded(&self, rel: &Path) -> bool {
        let parts: Vec<&str> = rel.iter().filter_map(|s| s.to_str()).collect();
        let mut excluded = false;
        for (negate, pattern) in &self.0 {
            let hit = (1..=parts.len()).any(|n| glob(pattern, &parts[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

/// A layer tar being written.
struct LayerWriter {
    builder: tar::Builder<File>,
    path: PathBuf,
    dirs: BTreeSet<PathBuf>,
}

impl LayerWriter {
    fn new(path: PathBuf) -> Result<LayerWriter> {
        let file = File::create(&path).map_err(RuntimeError::io("create", &path))?;
        Ok(LayerWriter { builder: tar::Builder::new(file), path, dirs: BTreeSet::new() })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> RuntimeError + use<> {
        RuntimeError::io("write layer", self.path.clone())
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(size);
        h
    }

    /// Parent directories of `rel` that have not been written yet.
    fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut acc = PathBuf::new();
        let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
        for c in parents {
            acc.push(c);
            if self.dirs.insert(acc.clone()) {
                let mut h = Self::header(tar::EntryType::Directory, 0o755, 0, 0, 0, 0);
                let err = self.io();
                self.builder.append_data(&mut h, &acc, std::io::empty()).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Adds the file-system object at `src` as `rel`, with `owner` overriding its ownership.
    fn add(&mut self, src: &Path, rel: &Path, owner: Option<(u64, u64)>) -> Result<()> {
        self.parents(rel)?;
        let meta = fs::symlink_metadata(src).map_err(RuntimeError::io("read", src))?;
        let (uid, gid) = owner.unwrap_or((u64::from(meta.uid()), u64::from(meta.gid())));
        let mode = meta.mode() & 0o7777;
        let mtime = meta.mtime().max(0) as u64;
        let ft = meta.file_type();
        let err = self.io();
        if ft.is_dir() {
            if self.dirs.insert(rel.to_path_buf()) {
                let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, mtime, 0);
                self.builder.append_data(&mut h, rel, std::io::empty()).map_err(err)?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(RuntimeError::io("read link", src))?;
            let mut h = Self::header(tar::EntryType::Symlink, 0o777, uid, gid, mtime, 0);
            self.builder.append_link(&mut h, rel, &target).map_err(err)?;
        } else if ft.is_file() {
            let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, mtime, meta.len());
            let file = File::open(src).map_err(RuntimeError::io("open", src))?;
            self.builder.append_data(&mut h, rel, file).map_err(err)?;
        } else if ft.is_char_device() && meta.rdev() == 0 {
            // An overlayfs whiteout in a writable layer: the OCI form.
            let name = format!(".wh.{}", rel.file_name().and_then(|n| n.to_str()).unwrap_or(""));
            let wh = rel.with_file_name(name);
            let mut h = Self::header(tar::EntryType::Regular, 0o644, 0, 0, mtime, 0);
            self.builder.append_data(&mut h, &wh, std::io::empty()).map_err(err)?;
        } else if ft.is_fifo() {
            let mut h = Self::header(tar::EntryType::Fifo, mode, uid, gid, mtime, 0);
            self.builder.append_data(&mut h, rel, std::io::empty()).map_err(err)?;
        }
        Ok(())
    }

    /// Adds `src` and, for a directory, everything below it (sorted), as `rel`.
    fn add_tree(
        &mut self,
        src: &Path,
        rel: &Path,
        owner: Option<(u64, u64)>,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<()> {
        if skip(rel) {
            return Ok(());
        }
        self.add(src, rel, owner)?;
        let meta = fs::symlink_metadata(src).map_err(RuntimeError::io("read", src))?;
        if meta.is_dir() {
            if opaque(src) {
                let mut h = Self::header(tar::EntryType::Regular, 0o644, 0, 0, 0, 0);
                let err = self.io();
                self.builder.append_data(&mut h, rel.join(".wh..wh..opq"), std::io::empty()).map_err(err)?;
            }
            let mut entries: Vec<_> =
                fs::read_dir(src).map_err(RuntimeError::io("list", src))?.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                self.add_tree(&entry.path(), &rel.join(entry.file_name()), owner, skip)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<PathBuf> {
        let path = self.path.clone();
        self.builder.into_inner().map_err(RuntimeError::io("finish layer", &path))?;
        Ok(path)
    }
}

fn opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut value = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the given size.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Resolves a COPY/ADD source inside `root`, refusing anything outside it.
fn resolve_source(root: &Path, src: &str, line: usize) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut rel = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::ParentDir if !rel.pop() => {
                return Err(build_err(line, format!("{src} is outside the build context")));
            }
            _ => {}
        }
    }
    let root_real = fs::canonicalize(root).map_err(RuntimeError::io("open", root))?;
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    let candidates: Vec<PathBuf> = if name.contains(['*', '?']) {
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut found: Vec<PathBuf> = fs::read_dir(root.join(&dir))
            .map_err(|_| build_err(line, format!("{src}: no such file or directory in the build context")))?
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| segment(name.as_bytes(), n.as_bytes())))
            .map(|e| dir.join(e.file_name()))
            .collect();
        found.sort();
        found
    } else {
        vec![rel]
    };
    let mut out = Vec::new();
    for rel in candidates {
        let path = root.join(&rel);
        let real = fs::canonicalize(&path)
            .map_err(|_| build_err(line, format!("{src}: no such file or directory in the build context")))?;
        if !real.starts_with(&root_real) {
            return Err(build_err(line, format!("{src} is outside the build context")));
        }
        out.push((path, rel));
    }
    if out.is_empty() {
        return Err(build_err(line, format!("{src}: no source files were specified")));
    }
    Ok(out)
}

/// A checksum of the files under `path` (names, modes, contents) for the layer cache.
fn checksum(path: &Path, rel: &Path, hasher: &mut Sha256, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    if skip(rel) {
        return Ok(());
    }
    let meta = fs::symlink_metadata(path).map_err(RuntimeError::io("read", path))?;
    hasher.update(rel.as_os_str().as_encoded_bytes());
    hasher.update(meta.mode().to_be_bytes());
    if meta.is_file() {
        let mut file = File::open(path).map_err(RuntimeError::io("open", path))?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = file.read(&mut buf).map_err(RuntimeError::io("read", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    } else if meta.is_symlink() {
        hasher.update(
            fs::read_link(path).map_err(RuntimeError::io("read link", path))?.as_os_str().as_encoded_bytes(),
        );
    } else if meta.is_dir() {
        let mut entries: Vec<_> =
            fs::read_dir(path).map_err(RuntimeError::io("list", path))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            checksum(&e.path(), &rel.join(e.file_name()), hasher, skip)?;
        }
    }
    Ok(())
}

fn shell_form(config: &Value, cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(list) => list.clone(),
        Command::Shell(text) => {
            let mut shell: Vec<String> = config["Shell"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            shell.push(text.clone());
            shell
        }
    }
}

fn set_env(config: &mut Value, key: &str, value: &str) {
    let env = config["Env"].as_array().cloned().unwrap_or_default();
    let mut env: Vec<Value> =
        env.into_iter().filter(|e| e.as_str().is_none_or(|s| s.split('=').next() != Some(key))).collect();
    env.push(json!(format!("{key}={value}")));
    config["Env"] = json!(env);
}

/// Builds images from Dockerfiles.
#[derive(Debug)]
pub struct Builder<'a> {
    store: &'a ImageStore,
    runtime: &'a Runtime,
}

/// A mounted read-only view of some layers (for COPY --from), unmounted on drop.
struct LayerView {
    root: PathBuf,
    mounted: bool,
    _scratch: Option<crate::image::ScratchDir>,
}

impl Drop for LayerView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl<'a> Builder<'a> {
    /// A builder over `store`, running RUN steps with `runtime`.
    pub fn new(store: &'a ImageStore, runtime: &'a Runtime) -> Builder<'a> {
        Builder { store, runtime }
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        self.store.root().join("build-cache").join(format!("{key}.json"))
    }

    fn cached_layer(&self, key: &str) -> Option<String> {
        let value: Value = serde_json::from_slice(&fs::read(self.cache_path(key)).ok()?).ok()?;
        let diff = value["diff_id"].as_str()?.to_string();
        let digest: Digest = diff.parse().ok()?;
        self.store.layer_dir(&digest).is_dir().then_some(diff)
    }

    fn remember(&self, key: &str, diff: &str) -> Result<()> {
        let path = self.cache_path(key);
        fs::create_dir_all(path.parent().expect("cache dir")).map_err(RuntimeError::io("create", &path))?;
        fs::write(&path, json!({ "diff_id": diff }).to_string()).map_err(RuntimeError::io("write", &path))
    }

    fn view(&self, diff_ids: &[String]) -> Result<LayerView> {
        let dirs: Vec<PathBuf> =
            diff_ids.iter().map(|d| Ok(self.store.layer_dir(&d.parse()?))).collect::<Result<_>>()?;
        if dirs.len() == 1 {
            return Ok(LayerView { root: dirs[0].clone(), mounted: false, _scratch: None });
        }
        let scratch = self.store.scratch_dir()?;
        let root = scratch.path().join("view");
        fs::create_dir_all(&root).map_err(RuntimeError::io("create", &root))?;
        if dirs.is_empty() {
            return Ok(LayerView { root, mounted: false, _scratch: Some(scratch) });
        }
        let lower: Vec<String> = dirs.iter().rev().map(|d| d.display().to_string()).collect();
        nix::mount::mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={}", lower.join(":")).as_str()),
        )
        .map_err(|e| RuntimeError::io("mount layers", &root)(std::io::Error::from_raw_os_error(e as i32)))?;
        Ok(LayerView { root, mounted: true, _scratch: Some(scratch) })
    }

    /// Runs a build. Nothing is recorded as an image unless every step succeeds.
    pub fn build(&self, options: &BuildOptions) -> Result<BuildReport> {
        let dockerfile_path =
            options.dockerfile.clone().unwrap_or_else(|| options.context.join("Dockerfile"));
        let text = fs::read_to_string(&dockerfile_path)
            .map_err(RuntimeError::io("read Dockerfile", &dockerfile_path))?;
        let dockerfile = parse(&text, &options.build_args).map_err(|e| build_err(e.line, e.message))?;
        for tag in &options.tags {
            if tag.is_empty()
                || tag.contains(char::is_whitespace)
                || tag.chars().any(|c| c.is_ascii_uppercase())
            {
                return Err(RuntimeError::invalid("tag", tag, "expected lowercase repo[:tag]"));
            }
        }
        let target = match &options.target {
            Some(t) => dockerfile
                .stage_index(t)
                .ok_or_else(|| RuntimeError::invalid("target", t, "no stage of that name"))?,
            None => dockerfile.stages.len() - 1,
        };
        let needed = self.check_references(&dockerfile, target)?;
        let ignore = Ignore::load(&options.context);
        let mut done: BTreeMap<usize, StageState> = BTreeMap::new();
        let mut report = Vec::new();
        let mut runs = 0;
        for index in 0..=target {
            if !needed.contains(&index) {
                continue;
            }
            let state =
                self.build_stage(&dockerfile, index, &done, options, &ignore, &mut report, &mut runs)?;
            done.insert(index, state);
        }
        let state = done.remove(&target).expect("target built");
        let image_config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": state.config,
            "rootfs": { "type": "layers", "diff_ids": state.diff_ids },
            "history": state.history,
        });
        let bytes = serde_json::to_vec(&image_config).expect("json");
        let image = self.store.add_image(&bytes, &options.tags)?;
        Ok(BuildReport { image, steps: report, runs_executed: runs })
    }

    /// Stages the target depends on; refuses `COPY --from` of an unknown stage or image before
    /// anything runs.
    fn check_references(&self, df: &Dockerfile, target: usize) -> Result<BTreeSet<usize>> {
        let mut needed = BTreeSet::new();
        let mut queue = vec![target];
        while let Some(i) = queue.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &df.stages[i];
            if let Some(base) =
                df.stage_index(&stage.base).filter(|b| *b < i && stage.base.parse::<usize>().is_err())
            {
                queue.push(base);
            } else if stage.base != "scratch" && self.store.get(&stage.base).is_err() {
                return Err(build_err(
                    stage.line,
                    format!(
                        "FROM {}: no such image in the local store (import or build it first)",
                        stage.base
                    ),
                ));
            }
            for step in &stage.steps {
                if let Instruction::Copy { from: Some(from), .. } = &step.instruction {
                    match df.stage_index(from) {
                        Some(j) if j < i => queue.push(j),
                        Some(_) => {
                            return Err(build_err(
                                step.line,
                                format!("COPY --from={from}: a stage can only copy from earlier stages"),
                            ));
                        }
                        None if self.store.get(from).is_ok() => {}
                        None => {
                            return Err(build_err(
                                step.line,
                                format!("COPY --from={from}: no stage or image of that name"),
                            ));
                        }
                    }
                }
            }
        }
        Ok(needed)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_stage(
        &self,
        df: &Dockerfile,
        index: usize,
        done: &BTreeMap<usize, StageState>,
        options: &BuildOptions,
        ignore: &Ignore,
        report: &mut Vec<StepReport>,
        runs: &mut usize,
    ) -> Result<StageState> {
        let stage = &df.stages[index];
        let mut state = match df.stage_index(&stage.base).filter(|b| *b < index).and_then(|b| done.get(&b)) {
            Some(base) => StageState { args: BTreeMap::new(), ..base.clone() },
            None if stage.base == "scratch" => StageState {
                diff_ids: vec![],
                config: json!({}),
                history: vec![],
                key: sha(&[b"scratch"]),
                args: BTreeMap::new(),
            },
            None => {
                let image = self.store.get(&stage.base).map_err(|e| build_err(stage.line, e.to_string()))?;
                StageState {
                    diff_ids: image.diff_ids.clone(),
                    config: image.runtime_config().clone(),
                    history: image.config["history"].as_array().cloned().unwrap_or_default(),
                    key: sha(&[image.id.as_bytes()]),
                    args: BTreeMap::new(),
                }
            }
        };
        if !state.config.is_object() {
            state.config = json!({});
        }
        let mut missed = options.no_cache;
        for step in &stage.steps {
            let line = step.line;
            let mut extra: Vec<u8> = Vec::new();
            let mut made_layer = false;
            let mut cached = false;
            match &step.instruction {
                Instruction::Run(cmd) => {
                    let mut env: Vec<String> = state.config["Env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect();
                    env.extend(state.args.iter().map(|(k, v)| format!("{k}={v}")));
                    extra.extend(env.join("\n").bytes());
                    let key = sha(&[state.key.as_bytes(), step.text.as_bytes(), &extra]);
                    let diff = match (!missed).then(|| self.cached_layer(&key)).flatten() {
                        Some(diff) => {
                            cached = true;
                            diff
                        }
                        None => {
                            missed = true;
                            *runs += 1;
                            let diff = self.run_step(&state, cmd, env, options, line)?;
                            self.remember(&key, &diff)?;
                            diff
                        }
                    };
                    state.diff_ids.push(diff);
                    state.key = key;
                    made_layer = true;
                }
                Instruction::Copy { .. } | Instruction::Add { .. } => {
                    let (from, chown, sources, dest, extract) = match &step.instruction {
                        Instruction::Copy { from, chown, sources, dest } => {
                            (from.as_deref(), chown, sources, dest, false)
                        }
                        Instruction::Add { chown, sources, dest } => (None, chown, sources, dest, true),
                        _ => unreachable!("matched above"),
                    };
                    if extract && sources.iter().any(|s| s.contains("://")) {
                        return Err(build_err(
                            line,
                            "ADD from a URL is not supported: download it into the context first",
                        ));
                    }
                    let (diff, key, hit) = self.copy_step(
                        &state,
                        done,
                        df,
                        from,
                        chown.as_deref(),
                        sources,
                        dest,
                        options,
                        ignore,
                        step.text.as_bytes(),
                        missed,
                        line,
                        extract,
                    )?;
                    missed |= !hit;
                    cached = hit;
                    state.diff_ids.push(diff);
                    state.key = key;
                    made_layer = true;
                }
                other => {
                    apply_metadata(&mut state, other);
                    state.key = sha(&[state.key.as_bytes(), step.text.as_bytes()]);
                }
            }
            state.history.push(json!({ "created_by": step.text, "empty_layer": !made_layer }));
            report.push(StepReport {
                stage: index,
                line,
                text: step.text.clone(),
                cached,
                layer: made_layer,
            });
        }
        Ok(state)
    }

    fn run_step(
        &self,
        state: &StageState,
        cmd: &Command,
        env: Vec<String>,
        options: &BuildOptions,
        line: usize,
    ) -> Result<String> {
        if state.diff_ids.is_empty() {
            return Err(build_err(
                line,
                "RUN needs a base image with a shell (this stage starts FROM scratch)",
            ));
        }
        let layers: Vec<PathBuf> =
            state.diff_ids.iter().map(|d| Ok(self.store.layer_dir(&d.parse()?))).collect::<Result<_>>()?;
        let spec = ContainerSpec {
            env,
            cwd: state.config["WorkingDir"].as_str().unwrap_or("/").to_string(),
            user: state.config["User"].as_str().unwrap_or("").to_string(),
            network: if options.network_host { NetworkMode::Host } else { NetworkMode::None },
            ..ContainerSpec::new(layers, shell_form(&state.config, cmd))
        };
        let spec = self.runtime.create(spec).map_err(|e| build_err(line, e.to_string()))?;
        let result = (|| -> Result<String> {
            self.runtime.start(&spec.id).map_err(|e| build_err(line, e.to_string()))?;
            let exit = self.runtime.wait(&spec.id, Some(Duration::from_secs(3600)))?;
            if exit.code != 0 {
                let (logs, _) = self.runtime.logs(&spec.id, 0)?;
                let tail: Vec<String> = logs.iter().rev().take(5).rev().map(|l| l.line.clone()).collect();
                return Err(build_err(
                    line,
                    format!("RUN exited with code {}: {}", exit.code, tail.join(" | ")),
                ));
            }
            let upper = self.runtime.upper_dir(&spec.id)?;
            let scratch = self.store.scratch_dir()?;
            let mut writer = LayerWriter::new(scratch.path().join("layer.tar"))?;
            let mounts_only = |rel: &Path| {
                // Mount points weft's setup created for /proc, /dev, /sys and the /etc files.
                let p = upper.join(rel);
                match rel.to_str() {
                    Some("proc" | "dev" | "sys") => {
                        fs::read_dir(&p).map(|mut d| d.next().is_none()).unwrap_or(false)
                    }
                    Some("etc/hosts" | "etc/hostname" | "etc/resolv.conf") => {
                        fs::metadata(&p).map(|m| m.len() == 0).unwrap_or(false)
                    }
                    _ => false,
                }
            };
            let mut entries: Vec<_> =
                fs::read_dir(&upper).map_err(RuntimeError::io("list", &upper))?.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                writer.add_tree(&entry.path(), Path::new(&entry.file_name()), None, &mounts_only)?;
            }
            let tar = writer.finish()?;
            Ok(self.store.add_layer_tar(&tar)?.to_string())
        })();
        let _ = self.runtime.remove(&spec.id, true);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &self,
        state: &StageState,
        done: &BTreeMap<usize, StageState>,
        df: &Dockerfile,
        from: Option<&str>,
        chown: Option<&str>,
        sources: &[String],
        dest: &str,
        options: &BuildOptions,
        ignore: &Ignore,
        text: &[u8],
        missed: bool,
        line: usize,
        extract: bool,
    ) -> Result<(String, String, bool)> {
        // Where the sources come from: the context, or a mounted view of a stage or image.
        let (view, source_key) = match from {
            None => (None, String::from("context")),
            Some(name) => {
                let (diffs, key) = match df.stage_index(name).and_then(|i| done.get(&i)) {
                    Some(s) => (s.diff_ids.clone(), s.key.clone()),
                    None => {
                        let image = self.store.get(name).map_err(|e| build_err(line, e.to_string()))?;
                        (image.diff_ids.clone(), image.id.clone())
                    }
                };
                (Some(self.view(&diffs)?), key)
            }
        };
        let root = view.as_ref().map(|v| v.root.clone()).unwrap_or_else(|| options.context.clone());
        let skip_context = |rel: &Path| from.is_none() && ignore.excluded(rel);
        let mut resolved = Vec::new();
        for src in sources {
            for (path, rel) in resolve_source(&root, src, line)? {
                if skip_context(&rel) {
                    return Err(build_err(line, format!("{src} is excluded by .dockerignore")));
                }
                resolved.push((path, rel));
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(source_key.as_bytes());
        for (path, rel) in &resolved {
            checksum(path, rel, &mut hasher, &|r| skip_context(r))?;
        }
        let key = sha(&[
            state.key.as_bytes(),
            text,
            hex::encode(hasher.finalize()).as_bytes(),
            chown.unwrap_or("").as_bytes(),
        ]);
        if !missed && let Some(diff) = self.cached_layer(&key) {
            return Ok((diff, key, true));
        }
        let owner = match chown {
            None => None,
            Some(spec) => Some(self.resolve_owner(state, spec, line)?),
        };
        let workdir = state.config["WorkingDir"].as_str().unwrap_or("/");
        let dest_abs =
            if dest.starts_with('/') { PathBuf::from(dest) } else { Path::new(workdir).join(dest) };
        let dest_rel: PathBuf = dest_abs.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        let into_dir = dest.ends_with('/') || resolved.len() > 1;
        let scratch = self.store.scratch_dir()?;
        let mut writer = LayerWriter::new(scratch.path().join("layer.tar"))?;
        for (path, rel) in &resolved {
            let meta = fs::symlink_metadata(path).map_err(RuntimeError::io("read", path))?;
            let name = rel.file_name().map(PathBuf::from).unwrap_or_default();
            if meta.is_dir() {
                // A directory's contents are copied, not the directory itself.
                let mut entries: Vec<_> =
                    fs::read_dir(path).map_err(RuntimeError::io("list", path))?.flatten().collect();
                entries.sort_by_key(|e| e.file_name());
                if !dest_rel.as_os_str().is_empty() {
                    writer.add(path, &dest_rel, owner)?;
                }
                for e in entries {
                    let child_rel = rel.join(e.file_name());
                    writer.add_tree(&e.path(), &dest_rel.join(e.file_name()), owner, &|r| {
                        skip_context(
                            &child_rel
                                .join(r.strip_prefix(dest_rel.join(e.file_name())).unwrap_or(Path::new(""))),
                        )
                    })?;
                }
            } else if extract && is_archive(path) {
                extract_into(&mut writer, path, &dest_rel, line)?;
            } else {
                let target = if into_dir { dest_rel.join(&name) } else { dest_rel.clone() };
                if target.as_os_str().is_empty() {
                    return Err(build_err(
                        line,
                        format!("cannot copy a file onto / (use {dest}{})", name.display()),
                    ));
                }
                writer.add(path, &target, owner)?;
            }
        }
        let tar = writer.finish()?;
        drop(view);
        let diff = self.store.add_layer_tar(&tar)?.to_string();
        self.remember(&key, &diff)?;
        Ok((diff, key, false))
    }

    /// `user[:group]` as numbers, names looked up in the stage's /etc/passwd and /etc/group.
    fn resolve_owner(&self, state: &StageState, spec: &str, line: usize) -> Result<(u64, u64)> {
        let (user, group) = spec.split_once(':').map(|(u, g)| (u, Some(g))).unwrap_or((spec, None));
        let lookup = |file: &str, name: &str| -> Option<u64> {
            for diff in state.diff_ids.iter().rev() {
                let dir = self.store.layer_dir(&diff.parse().ok()?);
                if let Ok(text) = fs::read_to_string(dir.join(file)) {
                    return text
                        .lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() > 2 && f[0] == name)
                        .and_then(|f| f[2].parse().ok());
                }
            }
            None
        };
        let uid = user
            .parse()
            .ok()
            .or_else(|| lookup("etc/passwd", user))
            .ok_or_else(|| build_err(line, format!("--chown: unknown user {user}")))?;
        let gid = match group {
            None => uid,
            Some(g) => g
                .parse()
                .ok()
                .or_else(|| lookup("etc/group", g))
                .ok_or_else(|| build_err(line, format!("--chown: unknown group {g}")))?,
        };
        Ok((uid, gid))
    }
}

fn is_archive(path: &Path) -> bool {
    let mut magic = [0u8; 262];
    let n = File::open(path).and_then(|mut f| f.read(&mut magic)).unwrap_or(0);
    (n >= 2 && magic[..2] == [0x1f, 0x8b]) || (n >= 262 && &magic[257..262] == b"ustar")
}

/// ADD of a local tar archive: its entries land under `dest`.
fn extract_into(writer: &mut LayerWriter, archive: &Path, dest: &Path, line: usize) -> Result<()> {
    let file = File::open(archive).map_err(RuntimeError::io("open", archive))?;
    let mut magic = [0u8; 2];
    let gz = File::open(archive).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read> =
        if gz { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(RuntimeError::io("read archive", archive))? {
        let mut entry = entry.map_err(RuntimeError::io("read archive", archive))?;
        let path = entry.path().map_err(RuntimeError::io("read archive", archive))?.into_owned();
        if path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir)) {
            return Err(build_err(
                line,
                format!("ADD {}: entry {} escapes the destination", archive.display(), path.display()),
            ));
        }
        let rel: PathBuf =
            dest.join(path.components().filter(|c| matches!(c, Component::Normal(_))).collect::<PathBuf>());
        if rel.as_os_str().is_empty() {
            continue;
        }
        writer.parents(&rel)?;
        let mut header = entry.header().clone();
        let err = writer.io();
        if header.entry_type().is_dir() {
            writer.dirs.insert(rel.clone());
        }
        writer.builder.append_data(&mut header, &rel, &mut entry).map_err(err)?;
    }
    Ok(())
}

fn apply_metadata(state: &mut StageState, instruction: &Instruction) {
    let config = &mut state.config;
    match instruction {
        Instruction::Env(pairs) => {
            for (k, v) in pairs {
                set_env(config, k, v);
            }
        }
        Instruction::Arg(name, value) => {
            if let Some(v) = value {
                state.args.insert(name.clone(), v.clone());
            }
        }
        Instruction::Workdir(dir) => {
            let base = config["WorkingDir"].as_str().unwrap_or("/").to_string();
            let dir = if dir.starts_with('/') {
                dir.clone()
            } else {
                Path::new(&base).join(dir).display().to_string()
            };
            config["WorkingDir"] = json!(dir);
        }
        Instruction::Cmd(cmd) => config["Cmd"] = json!(shell_form(config, cmd)),
        Instruction::Entrypoint(cmd) => {
            config["Entrypoint"] = json!(shell_form(config, cmd));
            config["Cmd"] = Value::Null;
        }
        Instruction::Expose(ports) => {
            for p in ports {
                let key = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
                if !config["ExposedPorts"].is_object() {
                    config["ExposedPorts"] = json!({});
                }
                config["ExposedPorts"][key] = json!({});
            }
        }
        Instruction::User(user) => config["User"] = json!(user),
        Instruction::Label(pairs) => {
            if !config["Labels"].is_object() {
                config["Labels"] = json!({});
            }
            for (k, v) in pairs {
                config["Labels"][k] = json!(v);
            }
        }
        Instruction::Volume(list) => {
            if !config["Volumes"].is_object() {
                config["Volumes"] = json!({});
            }
            for v in list {
                config["Volumes"][v] = json!({});
            }
        }
        Instruction::Shell(list) => config["Shell"] = json!(list),
        Instruction::StopSignal(sig) => config["StopSignal"] = json!(sig),
        Instruction::Healthcheck(words) => config["Healthcheck"] = json!({ "Test": words }),
        Instruction::Run(_) | Instruction::Copy { .. } | Instruction::Add { .. } => {}
    }
}
