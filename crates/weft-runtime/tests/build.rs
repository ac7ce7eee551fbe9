//! Dockerfile builds for real: build containers for RUN, layers from the context and other
//! stages, the layer cache (checked by what ran, not by time), multi-stage results that hold only
//! the final stage's layers, export read back by skopeo, and malformed Dockerfiles refused with
//! their line and no image written. Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weft_runtime::RuntimeError;
use weft_runtime::build::builder::{BuildOptions, Builder};
use weft_runtime::container::{ContainerSpec, Runtime};
use weft_runtime::image::{ImageRecord, ImageStore};

static N: AtomicU32 = AtomicU32::new(0);

struct Env {
    dir: PathBuf,
    store: ImageStore,
    runtime: Runtime,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = std::env::temp_dir().join(format!(
            "weft-build-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        let store = ImageStore::open(dir.join("images")).unwrap();
        store.import(&weft_test_images::busybox_save_dir(&dir), None).unwrap();
        let runtime = Runtime::new(&dir, env!("CARGO_BIN_EXE_weft-shim")).unwrap();
        Env { dir, store, runtime }
    }

    fn context(&self, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.dir.join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        for (name, content) in files {
            let path = ctx.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        ctx
    }

    fn build(
        &self,
        ctx: &Path,
        tag: &str,
    ) -> Result<weft_runtime::build::builder::BuildReport, RuntimeError> {
        let options =
            BuildOptions { context: ctx.to_path_buf(), tags: vec![tag.into()], ..BuildOptions::default() };
        Builder::new(&self.store, &self.runtime).build(&options)
    }

    /// Runs the image's default command and returns its output lines.
    fn run(&self, image: &ImageRecord) -> Vec<String> {
        let cfg = image.runtime_config();
        let argv: Vec<String> =
            cfg["Cmd"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let env: Vec<String> = cfg["Env"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let spec = ContainerSpec {
            image: image.id.clone(),
            env,
            cgroup_path: PathBuf::from(format!(
                "weft-test-build-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            )),
            ..ContainerSpec::new(self.store.layer_dirs(image).unwrap(), argv)
        };
        let spec = self.runtime.create(spec).unwrap();
        self.runtime.start(&spec.id).unwrap();
        let exit = self.runtime.wait(&spec.id, Some(Duration::from_secs(30))).unwrap();
        let lines = self.runtime.logs(&spec.id, 0).unwrap().0.into_iter().map(|l| l.line).collect();
        assert_eq!(exit.code, 0, "{lines:?}");
        self.runtime.remove(&spec.id, false).unwrap();
        lines
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(all) = self.runtime.list() {
            for (spec, _) in all {
                let _ = self.runtime.remove(&spec.id, true);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

const MULTI_STAGE: &str = r#"
FROM busybox AS build
ARG GREETING=hi
RUN mkdir -p /out && echo "$GREETING from stage one" > /out/hello && cp /bin/busybox /out/busybox
COPY data.txt /out/data.txt
RUN cat /out/data.txt >> /out/hello

FROM scratch
COPY --from=build /out/busybox /bin/busybox
COPY --from=build /out/hello /hello
ENV MODE=final
EXPOSE 8080
CMD ["/bin/busybox", "cat", "/hello"]
"#;

#[test]
fn multi_stage_build_runs_and_keeps_only_the_final_stage() {
    let env = Env::new("multi");
    let ctx = env.context(&[("Dockerfile", MULTI_STAGE), ("data.txt", "data from the context\n")]);
    let report = env.build(&ctx, "app:1").unwrap();
    assert_eq!(report.runs_executed, 2);
    let image = &report.image;
    assert_eq!(image.diff_ids.len(), 2, "two COPY layers; nothing of busybox or of stage one");
    assert_eq!(env.run(image), ["hi from stage one", "data from the context"]);
    let base = env.store.get("busybox").unwrap();
    assert!(image.diff_ids.iter().all(|d| !base.diff_ids.contains(d)));

    // Every step is in the history with its time; the image is as old as its newest step.
    let created = image.config["created"].as_str().unwrap_or_default().to_string();
    assert!(created.len() == 20 && created.ends_with('Z'), "created {created:?}");
    let history = image.config["history"].as_array().unwrap();
    assert!(history.iter().all(|h| h["created"].as_str().is_some_and(|c| c.len() == 20)), "{history:?}");
    assert_eq!(history.last().unwrap()["created"], created.as_str());
    let steps = env.store.history(image);
    assert_eq!(steps.iter().filter(|s| !s.empty_layer).count(), 2, "the two COPY layers of the final stage");
    assert!(steps.iter().filter(|s| !s.empty_layer).all(|s| s.size > 0), "{steps:?}");

    // The build cache: a second build (a second later) executes no RUN and gives the same image,
    // its steps keeping the times they were first built at.
    std::thread::sleep(Duration::from_millis(1100));
    let again = env.build(&ctx, "app:1").unwrap();
    assert_eq!(again.runs_executed, 0, "no RUN executed on a fully cached build");
    assert!(again.steps.iter().filter(|s| s.layer).all(|s| s.cached));
    assert_eq!(again.image.id, image.id);

    // Exported as docker-save, skopeo reads the config back.
    let out = env.dir.join("app.tar");
    env.store.export_docker("app:1", &out).unwrap();
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("docker-archive:{}", out.display()))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/busybox", "cat", "/hello"]));
    assert!(config["config"]["Env"].as_array().unwrap().iter().any(|e| e == "MODE=final"));
    assert!(config["config"]["ExposedPorts"].get("8080/tcp").is_some());
}

#[test]
fn changing_a_copied_file_rebuilds_exactly_that_layer_and_those_above() {
    let env = Env::new("cache");
    let dockerfile = "FROM busybox\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\nCOPY b.txt /b.txt\nCMD [\"cat\", \"/copy\", \"/b.txt\"]\n";
    let ctx = env.context(&[
        ("Dockerfile", dockerfile),
        ("a.txt", "a1\n"),
        ("b.txt", "b1\n"),
        ("ignored.txt", "x"),
        (".dockerignore", "ignored.txt\n"),
    ]);
    let first = env.build(&ctx, "cache:1").unwrap();
    assert_eq!(first.runs_executed, 2);
    let cached = |r: &weft_runtime::build::builder::BuildReport| {
        r.steps.iter().filter(|s| s.layer).map(|s| s.cached).collect::<Vec<_>>()
    };

    fs::write(ctx.join("b.txt"), "b2\n").unwrap();
    let second = env.build(&ctx, "cache:2").unwrap();
    assert_eq!(cached(&second), [true, true, true, false], "only the last layer is rebuilt");
    assert_eq!(second.runs_executed, 0);

    fs::write(ctx.join("a.txt"), "a2\n").unwrap();
    let third = env.build(&ctx, "cache:3").unwrap();
    assert_eq!(cached(&third), [true, false, false, false], "the COPY of a.txt and everything above");
    assert_eq!(third.runs_executed, 1);
    assert_eq!(env.run(&third.image), ["a2", "b2"]);
    // An ignored file does not bust the cache; --no-cache runs everything.
    fs::write(ctx.join("ignored.txt"), "changed").unwrap();
    assert_eq!(env.build(&ctx, "cache:4").unwrap().runs_executed, 0);
    let options = BuildOptions { context: ctx.clone(), no_cache: true, ..BuildOptions::default() };
    assert_eq!(Builder::new(&env.store, &env.runtime).build(&options).unwrap().runs_executed, 2);
}

#[test]
fn malformed_dockerfiles_are_refused_with_their_line_and_write_no_image() {
    let env = Env::new("bad");
    fs::write(env.dir.join("outside.txt"), "secret").unwrap();
    let before = env.store.list().unwrap().len();
    let cases: &[(&str, usize, &str)] = &[
        ("FROM busybox\nRUN true\nFROBNICATE now\n", 3, "unknown instruction"),
        ("FROM busybox\nCOPY a.txt b.txt /dir\n", 2, "must be a directory and end with a /"),
        ("FROM busybox\nRUN true\nCOPY ../outside.txt /x\n", 3, "outside the build context"),
        ("FROM busybox AS a\nFROM scratch\nCOPY --from=nope /x /x\n", 3, "no stage or image"),
        ("FROM busybox\nRUN exit 7\n", 2, "returned a non-zero code: 7"),
        ("FROM nosuchimage\n", 1, "no such image"),
    ];
    for (i, (dockerfile, line, want)) in cases.iter().enumerate() {
        let ctx = env.dir.join(format!("ctx{i}"));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        fs::write(ctx.join("a.txt"), "a").unwrap();
        fs::write(ctx.join("b.txt"), "b").unwrap();
        let err = env.build(&ctx, "bad:1").unwrap_err();
        match &err {
            RuntimeError::Build { line: got, message } => {
                assert_eq!(got, line, "{dockerfile:?}: {err}");
                assert!(message.contains(want), "{dockerfile:?}: {err}");
            }
            other => panic!("{dockerfile:?}: expected a build error, got {other}"),
        }
        assert_eq!(env.store.list().unwrap().len(), before, "no image written for {dockerfile:?}");
    }
    assert!(env.runtime.list().unwrap().is_empty(), "no build container left behind");
}
