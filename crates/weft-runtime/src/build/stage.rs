//! The stage loop: each stage starts from its base (scratch, an image, or an earlier stage) and
//! runs its instructions in order. RUN executes in a build container on the stage's layers and
//! its writable layer becomes a layer; COPY and ADD write a layer from the context, another stage
//! or an image; everything else changes only the config. The layer cache is used until the first
//! miss of a stage.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::History;

use super::cache::{CacheKey, ContentHasher, LayerCache};
use super::config::{RunConfig, base_history, step_history};
use super::context::{Ignore, SourceRoot};
use super::dockerfile::{Command, Dockerfile, Instruction, Step, parse_with_bases};
use super::layer::{Layer, LayerWriter, Owner, TreeOptions, is_archive};
use super::options::{BuildOptions, StepReport};
use super::view::ImageView;
use crate::container::{ContainerSpec, NetworkMode, Runtime};
use crate::image::{Digest, ImageStore, ScratchDir};
use crate::{Result, RuntimeError};

/// A build error at Dockerfile `line`.
pub(crate) fn build_err(line: usize, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Build { line, message: message.into() }
}

/// A stage while it is built, and once it is.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    /// Its layers, bottom first.
    pub(crate) diff_ids: Vec<Digest>,
    /// Its runtime config.
    pub(crate) config: RunConfig,
    /// The history of its layers and steps.
    pub(crate) history: Vec<History>,
    /// The cache key of its last step.
    pub(crate) key: CacheKey,
    /// ARG values in scope, passed to RUN as environment.
    args: BTreeMap<String, String>,
}

/// What every stage of one build reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Build<'a> {
    /// The image store (bases, layers, the cache).
    pub(crate) store: &'a ImageStore,
    /// Runs RUN's build containers.
    pub(crate) runtime: &'a Runtime,
    /// The parsed Dockerfile.
    pub(crate) dockerfile: &'a Dockerfile,
    /// The build's options.
    pub(crate) options: &'a BuildOptions,
    /// The context's `.dockerignore`.
    pub(crate) ignore: &'a Ignore,
    /// When the build happens (RFC 3339), for the history entries.
    pub(crate) created: &'a str,
}

/// What a build has done so far.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Every step that ran, in order.
    pub(crate) steps: Vec<StepReport>,
    /// RUN instructions executed (not taken from the cache).
    pub(crate) runs: usize,
}

/// A COPY or ADD instruction.
#[derive(Debug, Clone, Copy)]
struct CopyStep<'a> {
    /// `--from` (COPY only).
    from: Option<&'a str>,
    /// `--chown`.
    chown: Option<&'a str>,
    /// `--chmod`.
    chmod: Option<u32>,
    sources: &'a [String],
    dest: &'a str,
    /// ADD: local archives are extracted.
    extract: bool,
    /// The instruction's text (part of its cache key).
    text: &'a str,
    line: usize,
}

/// The result of a layer-making step.
#[derive(Debug)]
struct StepLayer {
    diff: Digest,
    key: CacheKey,
    cached: bool,
}

/// A mounted read-only view of some layers (for COPY --from), unmounted on drop.
struct LayerView {
    root: PathBuf,
    mounted: bool,
    _scratch: Option<ScratchDir>,
}

impl Drop for LayerView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The stages `target` depends on. Refuses a `FROM` image that is not in the store and a
/// `COPY --from` of an unknown or later stage or image before anything runs.
pub(crate) fn stages_needed(store: &ImageStore, df: &Dockerfile, target: usize) -> Result<BTreeSet<usize>> {
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
        } else if stage.base != "scratch" && store.get(&stage.base).is_err() {
            return Err(build_err(
                stage.line,
                format!("FROM {}: no such image in the local store (import or build it first)", stage.base),
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
                    None if store.get(from).is_ok() => {}
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

fn parse_diffs(diff_ids: &[String]) -> Result<Vec<Digest>> {
    diff_ids.iter().map(|d| d.parse()).collect()
}

impl Build<'_> {
    fn cache(&self) -> LayerCache<'_> {
        LayerCache::new(self.store)
    }

    fn layer_dirs(&self, diff_ids: &[Digest]) -> Vec<PathBuf> {
        diff_ids.iter().map(|d| self.store.layer_dir(d)).collect()
    }

    /// Stores a finished layer tar, checking the store saw the digest the writer computed.
    fn store_layer(&self, layer: &Layer) -> Result<Digest> {
        let diff = self.store.add_layer_tar(&layer.path)?;
        if diff != layer.diff_id {
            return Err(RuntimeError::DigestMismatch {
                what: format!("layer {}", layer.path.display()),
                expected: layer.diff_id.to_string(),
                actual: diff.to_string(),
            });
        }
        Ok(diff)
    }

    /// Where stage `index` starts.
    fn start(&self, index: usize, done: &BTreeMap<usize, StageState>) -> Result<StageState> {
        let df = self.dockerfile;
        let stage = &df.stages[index];
        if let Some(base) = df.stage_index(&stage.base).filter(|b| *b < index).and_then(|b| done.get(&b)) {
            return Ok(StageState { args: BTreeMap::new(), ..base.clone() });
        }
        if stage.base == "scratch" {
            return Ok(StageState {
                diff_ids: vec![],
                config: RunConfig::default(),
                history: vec![],
                key: CacheKey::scratch(),
                args: BTreeMap::new(),
            });
        }
        let image = self.store.get(&stage.base).map_err(|e| build_err(stage.line, e.to_string()))?;
        Ok(StageState {
            diff_ids: parse_diffs(&image.diff_ids)?,
            config: RunConfig::from_image(image.runtime_config())?,
            history: base_history(&image.config, image.diff_ids.len())?,
            key: CacheKey::image(&image.id),
            args: BTreeMap::new(),
        })
    }

    /// Builds stage `index`; `done` holds the stages built before it. The base image's ONBUILD
    /// triggers run first, as if they were the stage's first instructions.
    pub(crate) fn stage(
        &self,
        index: usize,
        done: &BTreeMap<usize, StageState>,
        progress: &mut Progress,
    ) -> Result<StageState> {
        let mut state = self.start(index, done)?;
        let from_line = self.dockerfile.stages[index].line;
        let triggers = state.config.start_stage();
        let trigger_steps = self.trigger_steps(&triggers, &state, from_line)?;
        let cache = self.cache();
        let mut missed = self.options.no_cache;
        for step in trigger_steps.iter().chain(&self.dockerfile.stages[index].steps) {
            let line = step.line;
            let layer = match &step.instruction {
                Instruction::Run(cmd) => {
                    let key = state.key.run(&step.text, state.config.env(), &state.args);
                    let hit = if missed { None } else { cache.lookup(&key) };
                    let cached = hit.is_some();
                    let diff = match hit {
                        Some(diff) => diff,
                        None => {
                            missed = true;
                            progress.runs += 1;
                            let diff = self.run(&state, cmd, &step.text, line)?;
                            cache.store(&key, &diff)?;
                            diff
                        }
                    };
                    Some(StepLayer { diff, key, cached })
                }
                Instruction::Copy { from, chown, chmod, sources, dest } => {
                    let copy = CopyStep {
                        from: from.as_deref(),
                        chown: chown.as_deref(),
                        chmod: *chmod,
                        sources,
                        dest,
                        extract: false,
                        text: &step.text,
                        line,
                    };
                    Some(self.copy(&state, done, copy, missed)?)
                }
                Instruction::Add { chown, chmod, sources, dest } => {
                    let copy = CopyStep {
                        from: None,
                        chown: chown.as_deref(),
                        chmod: *chmod,
                        sources,
                        dest,
                        extract: true,
                        text: &step.text,
                        line,
                    };
                    Some(self.copy(&state, done, copy, missed)?)
                }
                other => {
                    if let Instruction::Arg(name, Some(value)) = other {
                        state.args.insert(name.clone(), value.clone());
                    }
                    state.config.apply(other);
                    let key = state.key.metadata(&step.text);
                    // WORKDIR makes its directory when the image lacks it (a layer of its own).
                    match other {
                        Instruction::Workdir(_) => self.workdir(&state, key, missed)?,
                        _ => {
                            state.key = key;
                            None
                        }
                    }
                }
            };
            let (made_layer, cached) = match layer {
                Some(StepLayer { diff, key, cached }) => {
                    missed |= !cached;
                    state.diff_ids.push(diff);
                    state.key = key;
                    (true, cached)
                }
                None => (false, false),
            };
            // A step before the first miss keeps the time it was first built at.
            let created = match cache.created(&state.key) {
                Some(first) if !missed => first,
                _ => {
                    cache.record_created(&state.key, self.created)?;
                    self.created.to_string()
                }
            };
            state.history.push(step_history(&step.text, made_layer, &created));
            progress.steps.push(StepReport {
                stage: index,
                line,
                text: step.text.clone(),
                cached,
                layer: made_layer,
            });
        }
        Ok(state)
    }

    /// The base image's ONBUILD triggers as steps: each parsed as an instruction of this stage,
    /// its variables expanded with the stage's environment (Docker expands them in the child).
    fn trigger_steps(&self, triggers: &[String], state: &StageState, line: usize) -> Result<Vec<Step>> {
        if triggers.is_empty() {
            return Ok(Vec::new());
        }
        let text = format!("FROM base\n{}\n", triggers.join("\n"));
        let env = state.config.env().to_vec();
        let parsed = parse_with_bases(&text, &self.options.build_args, &|_| Some(env.clone()))
            .map_err(|e| build_err(line, format!("ONBUILD trigger: {}", e.message)))?;
        Ok(parsed.stages.into_iter().flat_map(|s| s.steps).map(|step| Step { line, ..step }).collect())
    }

    /// WORKDIR: the layer that makes the working directory (and its parents: 0755, owned by
    /// root, as Docker's classic builder makes them whatever USER says), or none when the image
    /// has it already.
    fn workdir(&self, state: &StageState, key: CacheKey, missed: bool) -> Result<Option<StepLayer>> {
        let view = ImageView::new(self.layer_dirs(&state.diff_ids));
        let dir = view.resolve(Path::new(state.config.working_dir()));
        if dir.as_os_str().is_empty() || view.metadata(&dir).is_some_and(|m| m.is_dir()) {
            return Ok(None);
        }
        if !missed && let Some(diff) = self.cache().lookup(&key) {
            return Ok(Some(StepLayer { diff, key, cached: true }));
        }
        let scratch = self.store.scratch_dir()?;
        let mut writer = LayerWriter::create(scratch.path().join("layer.tar"))?;
        write_dir_chain(&mut writer, &view, &dir, DirAttrs::created(None))?;
        let diff = self.store_layer(&writer.finish()?)?;
        self.cache().store(&key, &diff)?;
        Ok(Some(StepLayer { diff, key, cached: false }))
    }

    /// Executes a RUN in a build container and stores its writable layer.
    fn run(&self, state: &StageState, cmd: &Command, text: &str, line: usize) -> Result<Digest> {
        if state.diff_ids.is_empty() {
            return Err(build_err(
                line,
                "RUN needs a base image with a shell (this stage starts FROM scratch)",
            ));
        }
        let mut env = state.config.env().to_vec();
        env.extend(state.args.iter().map(|(k, v)| format!("{k}={v}")));
        let argv = state.config.argv(cmd);
        let spec = ContainerSpec {
            env,
            cwd: state.config.working_dir().to_string(),
            user: state.config.user().to_string(),
            network: if self.options.network_host { NetworkMode::Host } else { NetworkMode::None },
            ..ContainerSpec::new(self.layer_dirs(&state.diff_ids), argv.clone())
        };
        let spec = self.runtime.create(spec).map_err(|e| build_err(line, e.to_string()))?;
        let result = (|| -> Result<Digest> {
            self.runtime.start(&spec.id).map_err(|e| build_err(line, e.to_string()))?;
            let exit = self.runtime.wait(&spec.id, Some(Duration::from_secs(3600)))?;
            if exit.code != 0 {
                let (logs, _) = self.runtime.logs(&spec.id, 0)?;
                let tail: Vec<String> = logs.iter().rev().take(5).rev().map(|l| l.line.clone()).collect();
                let shown = text.strip_prefix("RUN ").unwrap_or(text).trim();
                return Err(build_err(
                    line,
                    format!(
                        "The command '{shown}' returned a non-zero code: {}{}",
                        exit.code,
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!(" (last output: {})", tail.join(" | "))
                        }
                    ),
                ));
            }
            let upper = self.runtime.upper_dir(&spec.id)?;
            let scratch = self.store.scratch_dir()?;
            let mut writer = LayerWriter::create(scratch.path().join("layer.tar"))?;
            writer.add_upper_dir(&upper)?;
            self.store_layer(&writer.finish()?)
        })();
        let _ = self.runtime.remove(&spec.id, true);
        result
    }

    /// A COPY or ADD: its layer from the cache, or written, with Docker's rules for the
    /// destination: a path ending in `/`, or a directory the image has already, receives the
    /// sources inside it; otherwise it is the name of the one file copied. Several sources need
    /// a destination ending in `/`. A directory source copies its contents. A source named
    /// through a symlink is followed; symlinks inside a copied directory are kept. Everything is
    /// owned by root (or `--chown`) and keeps its mode (or takes `--chmod`); directories the
    /// copy creates on the way are 0755, owned as the copied files; the image's own directories
    /// on the way keep their mode and owner, and its symlinks are followed.
    fn copy(
        &self,
        state: &StageState,
        done: &BTreeMap<usize, StageState>,
        step: CopyStep<'_>,
        missed: bool,
    ) -> Result<StepLayer> {
        let line = step.line;
        if step.extract && step.sources.iter().any(|s| s.contains("://")) {
            return Err(build_err(
                line,
                "ADD from a URL is not supported: download it into the context first",
            ));
        }
        // Where the sources come from: the context, or a mounted view of a stage or image.
        let (view, origin) = match step.from {
            None => (None, String::from("context")),
            Some(name) => {
                let (diffs, origin) = match self.dockerfile.stage_index(name).and_then(|i| done.get(&i)) {
                    Some(s) => (s.diff_ids.clone(), s.key.as_str().to_string()),
                    None => {
                        let image = self.store.get(name).map_err(|e| build_err(line, e.to_string()))?;
                        (parse_diffs(&image.diff_ids)?, image.id.clone())
                    }
                };
                (Some(self.view(&diffs)?), origin)
            }
        };
        let root = match &view {
            Some(v) => SourceRoot::other(&v.root),
            None => SourceRoot::context(&self.options.context, self.ignore),
        };
        let mut resolved = Vec::new();
        for src in step.sources {
            resolved.extend(root.resolve(src).map_err(|e| e.at(line))?);
        }
        if resolved.is_empty() {
            return Err(build_err(line, "no source files were specified"));
        }
        let wants_dir = step.dest.ends_with('/');
        if resolved.len() > 1 && !wants_dir {
            return Err(build_err(
                line,
                "When using COPY with more than one source file, the destination must be a directory and end with a /",
            ));
        }
        let skip = |rel: &Path| root.skips(rel);
        let mut content = ContentHasher::new(&origin);
        for source in &resolved {
            content.add(&source.path, &source.rel, &skip)?;
        }
        let mode_text = step.chmod.map(|m| format!("{m:o}"));
        let flags = [step.chown.unwrap_or(""), mode_text.as_deref().unwrap_or("")].join(" ");
        let key = state.key.copy(
            step.text,
            &content.finish(),
            Some(flags.as_str()).filter(|f| !f.trim().is_empty()),
        );
        if !missed && let Some(diff) = self.cache().lookup(&key) {
            return Ok(StepLayer { diff, key, cached: true });
        }
        let owner = match step.chown {
            None => Owner { uid: 0, gid: 0 },
            Some(spec) => self.resolve_owner(state, spec, line)?,
        };
        let image = ImageView::new(self.layer_dirs(&state.diff_ids));
        let workdir = state.config.working_dir();
        let dest_abs = if step.dest.starts_with('/') {
            PathBuf::from(step.dest)
        } else {
            Path::new(workdir).join(step.dest)
        };
        let dest = image.resolve(&dest_abs);
        let existing = image.metadata(&dest);
        let archives = step.extract && resolved.iter().any(|s| is_archive(&s.path));
        let into_dir = wants_dir || archives || existing.as_ref().is_some_and(|m| m.is_dir());
        let created = DirAttrs::created(step.chown.map(|_| owner));
        let scratch = self.store.scratch_dir()?;
        let mut writer = LayerWriter::create(scratch.path().join("layer.tar"))?;
        let options = TreeOptions { owner: Some(owner), mode: step.chmod, skip: &skip };
        let not_a_dir = |what: &Path| {
            build_err(line, format!("cannot copy into /{}: not a directory in the image", what.display()))
        };
        let chain =
            if into_dir { dest.clone() } else { dest.parent().map(Path::to_path_buf).unwrap_or_default() };
        write_dir_chain(&mut writer, &image, &chain, created).map_err(|e| match e {
            RuntimeError::Build { .. } => e,
            RuntimeError::Invalid { value, .. } => not_a_dir(Path::new(&value)),
            other => other,
        })?;
        for source in &resolved {
            // A source named through a symlink is followed (it stays inside the root: resolve
            // checked that); what is found inside a copied directory is taken as it is.
            let path = fs::canonicalize(&source.path).map_err(RuntimeError::io("read", &source.path))?;
            let meta = fs::metadata(&path).map_err(RuntimeError::io("read", &path))?;
            let name = source.rel.file_name().map(PathBuf::from).unwrap_or_default();
            if meta.is_dir() {
                if !into_dir && existing.is_some() {
                    return Err(not_a_dir(&dest));
                }
                if !into_dir {
                    write_dir_chain(&mut writer, &image, &dest, created)?;
                }
                // A directory's contents are copied, not the directory itself.
                writer.add_dir_contents(&path, &dest, &source.rel, options)?;
            } else if step.extract && is_archive(&path) {
                writer.extract_archive(&path, &dest).map_err(|e| match e {
                    RuntimeError::UnsafeEntry { entry, .. } => build_err(
                        line,
                        format!("ADD {}: entry {entry} escapes the destination", path.display()),
                    ),
                    other => other,
                })?;
            } else {
                let target = if into_dir { dest.join(&name) } else { dest.clone() };
                if target.as_os_str().is_empty() {
                    return Err(build_err(
                        line,
                        format!("cannot copy a file onto / (use {}{})", step.dest, name.display()),
                    ));
                }
                writer.add(&path, &target, Some(owner), step.chmod)?;
            }
        }
        let layer = writer.finish()?;
        drop(view);
        let diff = self.store_layer(&layer)?;
        self.cache().store(&key, &diff)?;
        Ok(StepLayer { diff, key, cached: false })
    }

    /// `user[:group]` as numbers, names looked up in the stage's /etc/passwd and /etc/group.
    fn resolve_owner(&self, state: &StageState, spec: &str, line: usize) -> Result<Owner> {
        let (user, group) = spec.split_once(':').map(|(u, g)| (u, Some(g))).unwrap_or((spec, None));
        let lookup = |file: &str, name: &str| -> Option<u64> {
            for diff in state.diff_ids.iter().rev() {
                if let Ok(text) = fs::read_to_string(self.store.layer_dir(diff).join(file)) {
                    return text
                        .lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() > 2 && f[0] == name)
                        .and_then(|f| f[2].parse().ok());
                }
            }
            None
        };
        let uid = user.parse().ok().or_else(|| lookup("etc/passwd", user)).ok_or_else(|| {
            build_err(
                line,
                format!("--chown: unable to find user {user}: no matching entries in /etc/passwd"),
            )
        })?;
        let gid = match group {
            None => uid,
            Some(g) => g.parse().ok().or_else(|| lookup("etc/group", g)).ok_or_else(|| {
                build_err(
                    line,
                    format!("--chown: unable to find group {g}: no matching entries in /etc/group"),
                )
            })?,
        };
        Ok(Owner { uid, gid })
    }

    /// The file system of `diff_ids` stacked: the layer itself for one, an overlay mount of them
    /// for more, an empty directory for none.
    fn view(&self, diff_ids: &[Digest]) -> Result<LayerView> {
        let dirs = self.layer_dirs(diff_ids);
        if let [only] = dirs.as_slice() {
            return Ok(LayerView { root: only.clone(), mounted: false, _scratch: None });
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
}

/// How a directory the build writes looks: the image's own (its mode, owner and time kept) or
/// one it creates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirAttrs {
    mode: u32,
    owner: Owner,
    mtime: u64,
}

impl DirAttrs {
    /// A directory the build creates: 0755, owned by `owner` (`--chown`) or root.
    pub(crate) fn created(owner: Option<Owner>) -> DirAttrs {
        DirAttrs { mode: 0o755, owner: owner.unwrap_or(Owner { uid: 0, gid: 0 }), mtime: 0 }
    }

    fn of(meta: &fs::Metadata) -> DirAttrs {
        use std::os::unix::fs::MetadataExt;
        DirAttrs {
            mode: meta.mode() & 0o7777,
            owner: Owner { uid: u64::from(meta.uid()), gid: u64::from(meta.gid()) },
            mtime: meta.mtime().max(0) as u64,
        }
    }
}

/// Writes `dir` and every directory above it into the layer: those the image has keep their
/// mode, owner and time (a layer must not change them), the others get `created`. A non-
/// directory of the image on the way is refused (`RuntimeError::Invalid` naming it).
pub(crate) fn write_dir_chain(
    writer: &mut LayerWriter,
    image: &ImageView,
    dir: &Path,
    created: DirAttrs,
) -> Result<()> {
    let mut acc = PathBuf::new();
    for part in dir.components() {
        acc.push(part);
        let attrs = match image.metadata(&acc) {
            Some(meta) if meta.is_dir() => DirAttrs::of(&meta),
            Some(_) => {
                return Err(RuntimeError::invalid(
                    "destination",
                    acc.display().to_string(),
                    "not a directory",
                ));
            }
            None => created,
        };
        writer.dir(&acc, attrs.mode, attrs.owner, attrs.mtime)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile::parse;

    #[test]
    fn references_are_checked_before_anything_runs() {
        let dir = std::env::temp_dir().join(format!("weft-stage-refs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = ImageStore::open(dir.join("images")).unwrap();
        let df = |text: &str| parse(text, &BTreeMap::new()).unwrap();
        let needed = |text: &str| {
            let df = df(text);
            stages_needed(&store, &df, df.stages.len() - 1)
        };
        let line_of = |r: Result<BTreeSet<usize>>| match r {
            Err(RuntimeError::Build { line, .. }) => line,
            other => panic!("expected a build error, got {other:?}"),
        };

        let multi =
            "FROM scratch AS a\nCOPY x /x\nFROM scratch AS unused\nFROM scratch\nCOPY --from=a /x /x\n";
        assert_eq!(needed(multi).unwrap(), BTreeSet::from([0, 2]));
        assert_eq!(needed("FROM scratch AS a\nFROM a\n").unwrap(), BTreeSet::from([0, 1]));
        assert_eq!(line_of(needed("FROM nosuchimage\n")), 1);
        assert_eq!(line_of(needed("FROM scratch\nCOPY --from=nope /x /x\n")), 2);
        let later = df("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\n");
        assert_eq!(line_of(stages_needed(&store, &later, 0)), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
