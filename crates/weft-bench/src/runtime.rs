//! Suite `runtime`: create + start + wait + delete of `/bin/true` through weft, against `crun run`
//! and `runc run` (Debian's) on the same busybox root file system, in one run.
//!
//! Method: the suite moves itself into a private mount namespace and unmounts the hybrid layout's
//! empty cgroup v2 mount there (crun refuses the hybrid layout otherwise); all three runtimes run
//! in that namespace. Each iteration is one full container lifecycle, timed from the first call
//! to the container being gone: for weft `Runtime::create`, `start`, `wait`, `remove` (the
//! monitor is this binary's `monitor` verb, as weftd's will be); for crun and runc `run` with an
//! OCI bundle whose process is `/bin/true` (they create, start, wait and delete). All three run
//! under Docker's default seccomp profile and capability set: weft compiles its own, crun and runc
//! get the same profile resolved by weft as the bundle's `linux.seccomp` (and compile it with
//! their libseccomp each run). weft also runs unconfined (`seccomp=unconfined`) to show what the
//! filter costs. 30 iterations each, interleaved in an order that rotates every iteration, after 3
//! warm-up runs; medians reported.
//!
//! Then what a user types, CLI to exit: a release `weftd` bootstrapped on a virtual host (the
//! same private mount namespace), and `weft run --rm --network none busybox /bin/true` (the CLI
//! starts, weftd creates, starts and waits the container, streams its logs, the CLI removes it
//! and exits), the same on an overlay network, against `crun run` of the same root file system
//! and, where a Docker Engine answers, `docker run --rm --network none` of the same image (loaded
//! with `docker load`), and the same docker client pointed at weftd's Docker API
//! (`--docker-socket`) against dockerd. 20 iterations each after 3 warm-ups, rotating; medians.
//! As the other
//! figures of this suite, ratios are weft's time over the baseline's: below 1 is faster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_runtime::container::{ContainerSpec, Runtime, SeccompMode, Security};
use weft_runtime::image::ImageStore;
use weft_runtime::security::{caps, seccomp};

use crate::report::Figure;

const ITERATIONS: usize = 30;
/// Iterations of the CLI-to-exit figures.
const CLI_ITERATIONS: usize = 20;
/// The image name Docker gets the busybox test image under.
const DOCKER_IMAGE: &str = "weft-bench/busybox:latest";

fn private_mounts() -> Result<()> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("make / private")?;
    let _ = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH);
    Ok(())
}

fn bundle(dir: &Path, layer: &Path, tool: &str) -> Result<PathBuf> {
    let bundle = dir.join(format!("bundle-{tool}"));
    std::fs::create_dir_all(&bundle)?;
    let status = Command::new("cp").arg("-a").arg(layer).arg(bundle.join("rootfs")).status()?;
    if !status.success() {
        bail!("copy rootfs for {tool}");
    }
    let status = Command::new("runc").args(["spec", "--bundle"]).arg(&bundle).status()?;
    if !status.success() {
        bail!("runc spec");
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    // Docker's confinement, as weft applies it: its capability set and its seccomp profile.
    let docker_caps = serde_json::json!(caps::DOCKER_DEFAULT);
    for set in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][set] = docker_caps.clone();
    }
    let kernel = seccomp::host_kernel()?;
    let resolved = seccomp::Profile::docker_default().resolve(caps::DOCKER_DEFAULT, kernel)?;
    config["linux"]["seccomp"] = resolved.to_oci_json();
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(bundle)
}

fn oci_run(tool: &str, bundle: &Path, n: usize) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(tool)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("weft-bench-{tool}-{}-{n}", std::process::id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    let took = start.elapsed();
    if !status.success() {
        bail!("{tool} run failed: {status}");
    }
    Ok(took)
}

fn weft_run(runtime: &Runtime, layers: &[PathBuf], n: usize, seccomp: SeccompMode) -> Result<Duration> {
    let unconfined = seccomp == SeccompMode::Unconfined;
    let spec = ContainerSpec {
        name: format!("bench-{n}{}", if unconfined { "-unconfined" } else { "" }),
        cgroup_path: PathBuf::from(format!("weft-bench-{}-{n}-{unconfined}", std::process::id())),
        security: Security { seccomp, ..Security::default() },
        ..ContainerSpec::new(layers.to_vec(), vec!["/bin/true".into()])
    };
    let start = Instant::now();
    let spec = runtime.create(spec)?;
    runtime.start(&spec.id)?;
    let exit = runtime.wait(&spec.id, Some(Duration::from_secs(30)))?;
    runtime.remove(&spec.id, false)?;
    let took = start.elapsed();
    if exit.code != 0 {
        bail!("weft container exited with {}", exit.code);
    }
    Ok(took)
}

/// Times one command from spawn to exit; fails when it fails.
fn timed(command: &mut Command, what: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("start {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

/// Whether a Docker Engine answers here, with the busybox test image loaded into it.
fn docker_ready(dir: &Path) -> bool {
    let ok =
        |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok(Command::new("docker").arg("info")) {
        return false;
    }
    let variant = weft_tests::images::Variant { tag: DOCKER_IMAGE.into(), ..Default::default() };
    let tar = weft_tests::images::variant_save_tar(dir, &variant);
    ok(Command::new("docker").arg("load").arg("-i").arg(&tar))
}

/// The CLI-to-exit figures (see the module documentation).
fn cli_figures(dir: &Path, crun_bundle: &Path) -> Result<Vec<Figure>> {
    crate::raft::build_binaries()?;
    let bed = weft_tests::VirtualHosts::new(1);
    let mut cluster = weft_tests::cluster::WeftCluster::new(&bed);
    cluster.docker_api = true;
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    cluster.weft_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.201.0.0/16", "bench"]);
    let docker = docker_ready(dir);
    let socket = format!("unix://{}", cluster.socket(0).display());
    let weft = |network: &str| {
        let mut c = Command::new(weft_tests::cluster::bin("weft"));
        c.args(["-H", &socket, "run", "--rm", "--network", network, "busybox", "/bin/true"]);
        c
    };
    let weft_docker_host = format!("unix://{}", cluster.docker_socket(0).display());
    let (mut none, mut overlay, mut crun, mut dockers) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut docker_on_weft = Vec::new();
    for n in 0..CLI_ITERATIONS + 3 {
        let mut took = [Duration::ZERO; 5];
        for k in 0..5 {
            let which = (k + n) % 5;
            took[which] = match which {
                0 => timed(&mut weft("none"), "weft run --rm")?,
                1 => timed(&mut weft("bench"), "weft run --rm on an overlay network")?,
                2 => oci_run("crun", crun_bundle, 1000 + n)?,
                3 if docker => timed(
                    Command::new("docker").args([
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        DOCKER_IMAGE,
                        "/bin/true",
                    ]),
                    "docker run --rm",
                )?,
                4 if docker => timed(
                    Command::new("docker").args([
                        "-H",
                        &weft_docker_host,
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        "busybox",
                        "/bin/true",
                    ]),
                    "docker run --rm against weftd's Docker API",
                )?,
                _ => Duration::ZERO,
            };
        }
        if n >= 3 {
            none.push(took[0]);
            overlay.push(took[1]);
            crun.push(took[2]);
            dockers.push(took[3]);
            docker_on_weft.push(took[4]);
        }
    }
    let (w, o, c) = (median_ms(none), median_ms(overlay), median_ms(crun));
    let mut figures = vec![
        Figure::new(
            "runtime.cli_run_rm.vs_crun",
            w,
            "ms",
            "crun run of the same rootfs, Docker's seccomp profile (median, same run)",
            c,
        ),
        Figure::new(
            "runtime.cli_run_rm_overlay.vs_crun",
            o,
            "ms",
            "crun run without a network (median, same run)",
            c,
        ),
    ];
    if docker {
        let d = median_ms(dockers);
        figures.push(Figure::new(
            "runtime.cli_run_rm.vs_docker",
            w,
            "ms",
            "docker run --rm --network none (median, same run)",
            d,
        ));
        figures.push(Figure::new(
            "runtime.docker_cli_on_weft.vs_docker",
            median_ms(docker_on_weft),
            "ms",
            "the same docker run --rm against dockerd instead of weftd's Docker API (median, same run)",
            d,
        ));
        let _ = Command::new("docker").args(["rmi", DOCKER_IMAGE]).stdout(Stdio::null()).status();
    }
    Ok(figures)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// Runs the suite and returns its figures.
pub fn run() -> Result<Vec<Figure>> {
    private_mounts()?;
    let dir = std::env::temp_dir().join(format!("{}-runtime", weft_tests::unique_prefix()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<Vec<Figure>> {
        let store = ImageStore::open(dir.join("images"))?;
        let image = store.import(&weft_tests::images::busybox_save_dir(&dir), None)?.remove(0);
        let layers = store.layer_dirs(&image)?;
        let runtime = Runtime::new(&dir, std::env::current_exe()?)?;
        let crun_bundle = bundle(&dir, &layers[0], "crun")?;
        let runc_bundle = bundle(&dir, &layers[0], "runc")?;
        let (mut weft, mut open, mut crun, mut runc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for n in 0..ITERATIONS + 3 {
            // The order changes every iteration, so no runtime always follows the same one.
            let (mut w, mut u, mut c, mut r) =
                (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
            for k in 0..4 {
                match (k + n) % 4 {
                    0 => w = weft_run(&runtime, &layers, n, SeccompMode::Default)?,
                    1 => u = weft_run(&runtime, &layers, n, SeccompMode::Unconfined)?,
                    2 => c = oci_run("crun", &crun_bundle, n)?,
                    _ => r = oci_run("runc", &runc_bundle, n)?,
                }
            }
            if n >= 3 {
                weft.push(w);
                open.push(u);
                crun.push(c);
                runc.push(r);
            }
        }
        let (w, u, c, r) = (median_ms(weft), median_ms(open), median_ms(crun), median_ms(runc));
        let cli = cli_figures(&dir, &crun_bundle)?;
        Ok(cli
            .into_iter()
            .chain([
                Figure::new(
                    "runtime.run_true.vs_crun",
                    w,
                    "ms",
                    "crun run, Docker's seccomp profile (median, same run)",
                    c,
                ),
                Figure::new(
                    "runtime.run_true.vs_runc",
                    w,
                    "ms",
                    "runc run, Docker's seccomp profile (median, same run)",
                    r,
                ),
                Figure::new(
                    "runtime.run_true.seccomp_cost",
                    w,
                    "ms",
                    "weft with seccomp=unconfined (median, same run)",
                    u,
                ),
            ])
            .collect())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
