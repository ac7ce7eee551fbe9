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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_runtime::container::{ContainerSpec, Runtime, SeccompMode, Security};
use weft_runtime::image::ImageStore;
use weft_runtime::security::{caps, seccomp};

use crate::report::Figure;

const ITERATIONS: usize = 30;

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

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// Runs the suite and returns its figures.
pub fn run() -> Result<Vec<Figure>> {
    private_mounts()?;
    let dir = std::env::temp_dir().join(format!("weft-bench-runtime-{}", std::process::id()));
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
        Ok(vec![
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
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
