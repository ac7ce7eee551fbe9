//! A real distribution image, made as users make one without a registry: a Debian 12 root file
//! system from debootstrap (device nodes and all), packed into an OCI layout by umoci and into a
//! docker-save archive by skopeo, imported with `weft image import`; then a Python app built on
//! it with the Dockerfile pattern people write every day (RUN useradd, WORKDIR, `COPY file .`,
//! COPY --chown, USER, EXPOSE, HEALTHCHECK, STOPSIGNAL, CMD). It runs as its user, answers over
//! HTTP, reports healthy, resolves another container's name through glibc, and stops on its
//! STOPSIGNAL well within the grace period.
//!
//! The image is made once per target directory (`target/tmp/debian12.tar`, about two minutes of
//! debootstrap from Debian's mirror) and reused after.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};

/// Runs `program args...`, panicking with its output when it fails.
fn must(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}\n{}", stdout(&out), stderr(&out));
}

/// The Debian 12 image as a docker-save archive, made (once) with debootstrap, umoci and skopeo.
fn debian_image() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let archive = dir.join("debian12.tar");
    if archive.exists() {
        return archive;
    }
    let work = dir.join(format!("debian12-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let rootfs = work.join("rootfs");
    let rootfs_text = rootfs.to_str().unwrap();
    must(
        "debootstrap",
        &[
            "--variant=minbase",
            "--include=python3,passwd",
            "bookworm",
            rootfs_text,
            "http://deb.debian.org/debian",
        ],
    );
    let devices = Command::new("find").args([rootfs_text, "-type", "c"]).output().unwrap();
    assert!(stdout(&devices).contains("/dev/null"), "debootstrap made device nodes: {}", stdout(&devices));
    let layout = format!("{}:debian", work.join("oci").display());
    must("umoci", &["init", "--layout", work.join("oci").to_str().unwrap()]);
    must("umoci", &["new", "--image", &layout]);
    must(
        "umoci",
        &[
            "config",
            "--image",
            &layout,
            "--config.cmd=/bin/bash",
            "--config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ],
    );
    let bundle = work.join("bundle");
    must("umoci", &["unpack", "--image", &layout, bundle.to_str().unwrap()]);
    must("cp", &["-a", &format!("{rootfs_text}/."), bundle.join("rootfs").to_str().unwrap()]);
    must("umoci", &["repack", "--image", &layout, bundle.to_str().unwrap()]);
    let partial = dir.join("debian12.tar.partial");
    let _ = std::fs::remove_file(&partial);
    must(
        "skopeo",
        &["copy", &format!("oci:{layout}"), &format!("docker-archive:{}:debian:12", partial.display())],
    );
    std::fs::rename(&partial, &archive).unwrap();
    std::fs::remove_dir_all(&work).unwrap();
    archive
}

const APP: &str = r#"import http.server, os, signal, sys

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open("data.txt", "rb").read()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

def bye(signum, frame):
    print("bye on signal", signum, flush=True)
    sys.exit(0)

signal.signal(signal.SIGUSR1, bye)
print("serving as uid", os.getuid(), flush=True)
http.server.HTTPServer(("", 8000), Hello).serve_forever()
"#;

const DOCKERFILE: &str = r#"FROM debian:12
RUN useradd --create-home --uid 1001 app
WORKDIR /srv/app
COPY hello.py .
COPY --chown=app:app data.txt ./
USER app
EXPOSE 8000
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=500ms --timeout=5s --retries=3 CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/')"
CMD ["python3", "hello.py"]
"#;

fn inspect(cluster: &WeftCluster<'_>, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&cluster.weft_ok(0, &["inspect", name])).unwrap()[0].clone()
}

#[test]
fn a_debian_image_and_a_python_app_built_on_it() {
    let archive = debian_image();
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    let imported = cluster.weft_ok(0, &["image", "import", archive.to_str().unwrap()]);
    assert!(imported.contains("debian:12"), "{imported}");
    // Its device nodes were imported as they are.
    let layers = cluster.state_dir(0).join("images/layers");
    let nodes = Command::new("find").arg(&layers).args(["-type", "c", "-name", "null"]).output().unwrap();
    assert!(!stdout(&nodes).trim().is_empty(), "no /dev/null in any layer under {}", layers.display());

    // What works on the bare image: bash, python3, su to another user.
    let bash = cluster.weft_ok(0, &["run", "--rm", "debian:12", "bash", "-c", "echo $BASH_VERSION"]);
    assert!(bash.starts_with('5'), "{bash}");
    let su =
        cluster.weft_ok(0, &["run", "--rm", "debian:12", "su", "-s", "/bin/sh", "-c", "id -un", "nobody"]);
    assert_eq!(su.trim(), "nobody");

    let ctx = cluster.scratch().join("pyapp");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.py"), APP).unwrap();
    std::fs::write(ctx.join("data.txt"), "hello from debian\n").unwrap();
    cluster.weft_ok(0, &["image", "build", "-t", "pyapp", ctx.to_str().unwrap()]);

    cluster.weft_ok(0, &["network", "create", "--subnet", "10.93.0.0/24", "apps"]);
    cluster.weft_ok(0, &["run", "-d", "--name", "peer", "--network", "apps", "busybox", "sleep", "3600"]);
    cluster.weft_ok(0, &["run", "-d", "--name", "app", "--network", "apps", "pyapp"]);
    cluster.eventually("healthy", Duration::from_secs(60), || {
        inspect(&cluster, "app")["health"]["status"] == "healthy"
    });
    assert!(cluster.weft_ok(0, &["logs", "app"]).contains("serving as uid 1001"));
    assert_eq!(cluster.weft_ok(0, &["exec", "app", "id", "-un"]).trim(), "app", "runs as its USER");
    assert_eq!(cluster.weft_ok(0, &["exec", "app", "pwd"]).trim(), "/srv/app");
    let owned = cluster.weft_ok(
        0,
        &["exec", "app", "stat", "-c", "%U %a", "/srv/app/data.txt", "/srv/app/hello.py", "/srv/app"],
    );
    assert_eq!(owned.lines().collect::<Vec<_>>(), ["app 644", "root 644", "root 755"], "{owned}");
    // glibc's resolver finds another container by name through weft's DNS.
    let peer_ip = inspect(&cluster, "peer")["networks"][0]["ips"][0].as_str().unwrap().to_string();
    let resolved = cluster.weft_ok(
        0,
        &["exec", "app", "python3", "-c", "import socket; print(socket.getaddrinfo('peer', 80)[0][4][0])"],
    );
    assert_eq!(resolved.trim(), peer_ip);
    let page = cluster.weft_ok(0, &["exec", "peer", "wget", "-q", "-O", "-", "http://app:8000/"]);
    assert_eq!(page, "hello from debian\n");

    // Its STOPSIGNAL (SIGUSR1, which it handles) ends it long before the 20 s grace period.
    let started = Instant::now();
    cluster.weft_ok(0, &["stop", "-t", "20", "app"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped by SIGUSR1, not SIGKILL: {:?}",
        started.elapsed()
    );
    let app = inspect(&cluster, "app");
    assert_eq!(app["exit_code"], 0, "{app}");
    assert!(cluster.weft_ok(0, &["logs", "app"]).contains("bye on signal 10"));
    cluster.weft_ok(0, &["rm", "-f", "app", "peer"]);
}
