//! The Docker Engine API on weftd's `--docker-socket`, driven by the real docker client: `docker
//! run --rm` prints and exits with the container's status, detached containers show in `docker
//! ps` and in `weft ps` under the same id, networks made with `docker network create -d overlay`
//! span the hosts (a `docker run` container on h0 pings a `weft run` one on h1 by name), a port
//! published with `docker run -p` answers curl from the other host, and bad requests get
//! Docker's status codes and messages while the daemon keeps serving.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};

/// `program` (docker, docker-compose, or script(1) running docker) pointed at host `i`'s weftd,
/// with a client configuration of its own.
fn client(cluster: &WeftCluster<'_>, i: usize, program: &str) -> Command {
    let config = cluster.scratch().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let mut command = Command::new(program);
    command
        .env("DOCKER_HOST", format!("unix://{}", cluster.docker_socket(i).display()))
        .env("DOCKER_CONFIG", &config)
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT");
    command
}

/// The docker client pointed at host `i`'s weftd.
fn docker(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> Output {
    client(cluster, i, "docker")
        .args(args)
        .output()
        .expect("the docker client (docker on PATH; .ci/run installs docker.io's client where none is)")
}

fn docker_ok(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> String {
    let out = docker(cluster, i, args);
    assert!(out.status.success(), "docker {args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// One raw HTTP/1.0 request on the socket: the status line's code and the body.
fn raw(cluster: &WeftCluster<'_>, i: usize, request: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(cluster.docker_socket(i)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

#[test]
fn the_docker_client_drives_weft() {
    let bed = VirtualHosts::new(2);
    let mut cluster = WeftCluster::new(&bed);
    cluster.docker_api = true;
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);

    // Version negotiation: the client (newer) settles on weft's 1.44.
    let version = docker_ok(&cluster, 0, &["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(version.trim(), "1.44");

    // docker run --rm: output, exit status, and nothing left behind.
    let out = docker(&cluster, 0, &["run", "--rm", "busybox", "echo", "hi"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    let out = docker(&cluster, 0, &["run", "--rm", "busybox", "sh", "-c", "echo to-err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("to-err"), "stderr is its own stream: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    cluster.eventually("--rm containers removed", Duration::from_secs(10), || {
        docker_ok(&cluster, 0, &["ps", "-aq"]).trim().is_empty()
    });

    // Networks through the docker client are weft's overlay networks.
    docker_ok(&cluster, 0, &["network", "create", "-d", "overlay", "--subnet", "10.93.0.0/16", "app"]);
    assert!(docker_ok(&cluster, 0, &["network", "ls"]).contains("app"));
    let net: serde_json::Value =
        serde_json::from_str(&docker_ok(&cluster, 0, &["network", "inspect", "app"])).unwrap();
    assert_eq!(net[0]["Driver"], "overlay", "{net}");
    assert_eq!(net[0]["IPAM"]["Config"][0]["Subnet"], "10.93.0.0/16", "{net}");
    assert!(cluster.weft_ok(1, &["network", "ls"]).contains("app"), "one network for the cluster");

    // A detached container: in docker ps, in weft ps under the same id, its logs, inspect.
    let id = docker_ok(
        &cluster,
        0,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "app",
            "busybox",
            "sh",
            "-c",
            "echo started; exec sleep 600",
        ],
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = docker_ok(&cluster, 0, &["ps", "--format", "{{.ID}} {{.Names}} {{.Status}}"]);
    assert!(ps.contains(&format!("{} web Up", &id[..12])), "{ps}");
    let weft_ps: serde_json::Value = serde_json::from_str(&cluster.weft_ok(0, &["inspect", "web"])).unwrap();
    assert_eq!(weft_ps[0]["id"], id.as_str(), "the same container for both APIs");
    cluster.eventually("docker logs", Duration::from_secs(5), || {
        docker_ok(&cluster, 0, &["logs", "web"]) == "started\n"
    });
    let inspect: serde_json::Value =
        serde_json::from_str(&docker_ok(&cluster, 0, &["inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["State"]["Running"], true, "{inspect}");
    let ip = inspect[0]["NetworkSettings"]["Networks"]["app"]["IPAddress"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.93."), "{inspect}");

    // Across hosts by name, both ways: docker's container on h0 pings weft's on h1.
    cluster.weft_ok(1, &["run", "-d", "--name", "peer", "--network", "app", "busybox", "sleep", "600"]);
    let ping = docker(
        &cluster,
        0,
        &["run", "--rm", "--network", "app", "busybox", "ping", "-c", "1", "-W", "3", "peer"],
    );
    assert!(
        ping.status.success(),
        "docker run on h0 -> weft run on h1 by name: {}{}",
        stdout(&ping),
        stderr(&ping)
    );
    let back = cluster.weft(1, &["exec", "peer", "ping", "-c", "1", "-W", "3", "web"]);
    assert!(back.status.success(), "weft run on h1 -> docker run on h0 by name: {}", stdout(&back));

    // A port published with docker run -p answers curl from the other host.
    let site = "mkdir -p /srv && echo via-docker-p > /srv/index.html && exec httpd -f -p 80 -h /srv";
    docker_ok(
        &cluster,
        0,
        &["run", "-d", "--name", "pub", "--network", "app", "-p", "8089:80", "busybox", "sh", "-c", site],
    );
    let url = format!("http://{}:8089/", bed.host(0).addr);
    cluster.eventually("curl from h1 to the published port", Duration::from_secs(10), || {
        stdout(&bed.host(1).output("curl", &["-s", "--max-time", "2", &url])).contains("via-docker-p")
    });
    let port = docker_ok(&cluster, 0, &["port", "pub"]);
    assert!(port.contains("80/tcp -> 0.0.0.0:8089"), "{port}");

    // Bad requests: Docker's codes and words, nothing changed.
    let conflict = docker(&cluster, 0, &["run", "-d", "--name", "web", "busybox", "true"]);
    assert_eq!(conflict.status.code(), Some(125));
    assert!(
        stderr(&conflict).contains("Conflict. The container name \"/web\" is already in use"),
        "{}",
        stderr(&conflict)
    );
    let missing = docker(&cluster, 0, &["run", "--rm", "nosuchimage"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(stderr(&missing).contains("nosuchimage"), "{}", stderr(&missing));
    let nonet = docker(&cluster, 0, &["run", "--rm", "--network", "nonet", "busybox", "true"]);
    assert!(stderr(&nonet).contains("network nonet not found"), "{}", stderr(&nonet));
    let tty = docker(&cluster, 0, &["run", "--rm", "-t", "busybox", "true"]);
    assert!(stderr(&tty).contains("weft does not support Config.Tty"), "{}", stderr(&tty));
    let (code, body) = raw(
        &cluster,
        0,
        "POST /v1.44/containers/create HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{not json",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"message\":\"malformed JSON body"), "{body}");
    let (code, body) = raw(&cluster, 0, "GET /v1.44/containers/nosuch/json HTTP/1.0\r\n\r\n");
    assert_eq!((code, body.trim()), (404, r#"{"message":"No such container: nosuch"}"#));
    let (code, body) = raw(&cluster, 0, "GET /v1.99/version HTTP/1.0\r\n\r\n");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Maximum supported API version is 1.44"), "{body}");
    let (code, body) = raw(&cluster, 0, "GET /_ping HTTP/1.0\r\n\r\n");
    assert_eq!((code, body.as_str()), (200, "OK"), "the daemon keeps serving");
    let names = docker_ok(&cluster, 0, &["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["pub", "web"], "refused requests left nothing behind");

    // exec: output and status without a TTY, and a shell on a pseudo-terminal (`script` gives
    // the client one), stdin included.
    let out = docker(&cluster, 0, &["exec", "web", "sh", "-c", "cat /etc/hostname; echo oops >&2; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stderr(&out), "oops\n");
    assert!(!stdout(&out).is_empty());
    let out = client(&cluster, 0, "script")
        .args(["-qec", "docker exec -it web sh -c 'tty; read line; echo got-$line; exit 5'", "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        stdin.write_all(b"hello\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("/dev/pts/") && text.contains("got-hello"), "{text}");

    // top: the container's processes, as ps -ef.
    let top = docker_ok(&cluster, 0, &["top", "web"]);
    assert!(top.starts_with("UID") && top.contains("sleep 600"), "{top}");

    // stats, start and restart, events.
    let stats = docker_ok(
        &cluster,
        0,
        &["stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", "web"],
    );
    assert!(stats.starts_with("web ") && !stats.contains("/ 0B") && !stats.ends_with(" 0\n"), "{stats}");
    let mut events = client(&cluster, 0, "docker")
        .args([
            "events",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}",
            "--filter",
            "type=container",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    docker_ok(
        &cluster,
        0,
        &["run", "-d", "--name", "ev", "--network", "none", "busybox", "sh", "-c", "sleep 0.6; exit 2"],
    );
    cluster.eventually("ev exits", Duration::from_secs(10), || {
        docker_ok(&cluster, 0, &["inspect", "-f", "{{.State.Status}}", "ev"]).trim() == "exited"
    });
    // Events come from looks 200 ms apart: an exit and a start closer than that show as a die
    // without its status.
    std::thread::sleep(Duration::from_millis(600));
    docker_ok(&cluster, 0, &["start", "ev"]);
    assert_eq!(
        docker_ok(&cluster, 0, &["inspect", "-f", "{{.State.Status}}", "ev"]).trim(),
        "running",
        "started again"
    );
    // It runs its command again (0.6 s), not a moment: the looks of events see it.
    std::thread::sleep(Duration::from_millis(300));
    let state = docker_ok(&cluster, 0, &["inspect", "-f", "{{json .State}}", "ev"]);
    assert!(state.contains("\"Running\":true"), "{state}");
    docker_ok(&cluster, 0, &["restart", "-t", "1", "ev"]);
    docker_ok(&cluster, 0, &["rm", "-f", "ev"]);
    std::thread::sleep(Duration::from_millis(600));
    let _ = events.kill();
    let seen = stdout(&events.wait_with_output().unwrap());
    for want in ["create ev", "start ev", "die ev 2", "destroy ev"] {
        assert!(
            seen.lines().any(|l| l.trim() == want || l.starts_with(&format!("{want} "))),
            "event {want:?} in:\n{seen}"
        );
    }
    assert!(seen.lines().filter(|l| l.starts_with("start ev")).count() >= 2, "started again: {seen}");

    // logs -f follows until the container exits.
    docker_ok(
        &cluster,
        0,
        &[
            "run",
            "-d",
            "--name",
            "counter",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo n$i; sleep 0.3; done",
        ],
    );
    let follow = docker_ok(&cluster, 0, &["logs", "-f", "counter"]);
    assert_eq!(follow, "n1\nn2\nn3\n");
    docker_ok(&cluster, 0, &["rm", "counter"]);

    // save, read by skopeo; rmi; load it back; tag.
    docker_ok(&cluster, 0, &["tag", "busybox", "mybox:1"]);
    let saved = cluster.scratch().join("mybox.tar");
    docker_ok(&cluster, 0, &["save", "-o", saved.to_str().unwrap(), "mybox:1"]);
    let skopeo = Command::new("skopeo")
        .args(["inspect", &format!("docker-archive:{}", saved.display())])
        .output()
        .unwrap();
    assert!(skopeo.status.success(), "skopeo reads docker save's tar: {}", stderr(&skopeo));
    let meta: serde_json::Value = serde_json::from_slice(&skopeo.stdout).unwrap();
    assert_eq!(meta["Os"], "linux", "{meta}");
    let rmi = docker_ok(&cluster, 0, &["rmi", "mybox:1"]);
    assert!(rmi.contains("Untagged: mybox:1"), "{rmi}");
    assert!(!docker_ok(&cluster, 0, &["images"]).contains("mybox"));
    let loaded = docker_ok(&cluster, 0, &["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: mybox:1"), "{loaded}");
    assert!(cluster.weft_ok(0, &["image", "ls"]).contains("mybox"), "loaded into weft's store");
    let bad = cluster.scratch().join("not-an-image.tar");
    std::fs::write(&bad, b"garbage").unwrap();
    let refused = docker(&cluster, 0, &["load", "-i", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("docker-save"), "names what was expected: {}", stderr(&refused));

    // A multi-stage build through the classic builder's endpoint, then run.
    let ctx = cluster.scratch().join("multi");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS build\nARG WHO=nobody\nRUN mkdir /out && echo built-for-$WHO > /out/msg\n\
         FROM busybox\nCOPY --from=build /out/msg /msg\nCMD [\"cat\", \"/msg\"]\n",
    )
    .unwrap();
    let build = client(&cluster, 0, "docker")
        .args(["build", "-t", "multi:1", "--build-arg", "WHO=docker", ctx.to_str().unwrap()])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}{}", stdout(&build), stderr(&build));
    assert!(stdout(&build).contains("Successfully tagged multi:1"), "{}", stdout(&build));
    assert!(stdout(&build).contains("Step 1/"), "{}", stdout(&build));
    assert_eq!(docker_ok(&cluster, 0, &["run", "--rm", "multi:1"]), "built-for-docker\n");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN exit 7\n").unwrap();
    let failed = client(&cluster, 0, "docker")
        .args(["build", "-t", "broken", ctx.to_str().unwrap()])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(format!("{}{}", stdout(&failed), stderr(&failed)).contains("exit"), "{}", stderr(&failed));

    // stop, inspect, rm -f, images.
    docker_ok(&cluster, 0, &["stop", "-t", "1", "web"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&docker_ok(&cluster, 0, &["inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited", "{inspect}");
    // weft's own start and restart of the same container; starting a running one is refused.
    cluster.weft_ok(0, &["start", "web"]);
    assert_eq!(docker_ok(&cluster, 0, &["inspect", "-f", "{{.State.Status}}", "web"]).trim(), "running");
    let again = cluster.weft(0, &["start", "web"]);
    assert!(!again.status.success() && stderr(&again).contains("already running"), "{}", stderr(&again));
    cluster.weft_ok(0, &["restart", "-t", "1", "web"]);
    assert_eq!(docker_ok(&cluster, 0, &["inspect", "-f", "{{.State.Status}}", "web"]).trim(), "running");
    docker_ok(&cluster, 0, &["rm", "-f", "web", "pub"]);
    assert!(cluster.weft_ok(0, &["ps", "-a"]).lines().count() <= 1, "removed from weft too");
    let images = docker_ok(&cluster, 0, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("busybox:latest"), "{images}");
    cluster.weft_ok(1, &["rm", "-f", "peer"]);
    assert!(docker_ok(&cluster, 0, &["network", "rm", "app"]).contains("app"));
    let gone = docker(&cluster, 0, &["network", "inspect", "app"]);
    assert!(!gone.status.success());
}

/// An answer read off a socket: status, headers (lower-case names), body (chunks joined).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request (Connection: close) on the unix socket at `path`.
fn call(path: &std::path::Path, method: &str, target: &str, body: Option<&str>) -> Answer {
    let mut stream = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = rest[line_end + 2 + size + 2..].to_vec();
        }
        rest = body;
    }
    Answer { status, headers, body: rest }
}

/// Docker's multiplexed frames as (stream, text).
fn frames(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while body.len() >= 8 {
        let len = u32::from_be_bytes([body[4], body[5], body[6], body[7]]) as usize;
        out.push((body[0], String::from_utf8_lossy(&body[8..8 + len]).to_string()));
        body = &body[8 + len..];
    }
    out
}

/// The JSON type of a value, for comparing shapes.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The same requests to dockerd and to weftd, compared on what clients read: status codes,
/// the types of the fields at `pointers` (and their values where both must agree), stream
/// framing, error messages. Runs where the machine has a Docker Engine (its socket), with
/// `--network none` containers only, so dockerd touches no network of the machine.
#[test]
fn weft_answers_as_dockerd_does() {
    let dockerd = std::path::PathBuf::from("/var/run/docker.sock");
    if UnixStream::connect(&dockerd).is_err() {
        eprintln!("no Docker Engine on /var/run/docker.sock: the differential test has no oracle here");
        return;
    }
    let bed = VirtualHosts::new(1);
    let mut cluster = WeftCluster::new(&bed);
    cluster.docker_api = true;
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    let tar = weft_test_images::busybox_save_tar(&cluster.scratch());
    let load = Command::new("docker")
        .args(["-H", "unix:///var/run/docker.sock", "load", "-i"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(load.status.success(), "docker load into dockerd: {}", stderr(&load));
    let weft = cluster.docker_socket(0);
    let prefix = bed.prefix().replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let name = format!("{prefix}-diff");
    // dockerd's containers go whatever happens.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["-H", "unix:///var/run/docker.sock", "rm", "-f", &self.0])
                .output();
        }
    }
    let _cleanup = Cleanup(name.clone());
    // dockerd 20.10 speaks up to 1.41: both are asked at that version.
    let v = "/v1.41";
    let both = |method: &str, target: &str, body: Option<&str>| {
        (call(&dockerd, method, target, body), call(&weft, method, target, body))
    };
    let same_shape = |what: &str, d: &serde_json::Value, w: &serde_json::Value, pointers: &[&str]| {
        for p in pointers {
            let (dv, wv) = (d.pointer(p), w.pointer(p));
            let (dk, wk) = (dv.map(kind), wv.map(kind));
            assert!(dk.is_some(), "{what}: dockerd has no {p}: {d}");
            assert_eq!(dk, wk, "{what}: {p} is a {dk:?} in dockerd, a {wk:?} in weft: {w}");
        }
    };

    let (d, w) = both("GET", "/_ping", None);
    assert_eq!((d.status, w.status), (200, 200));
    assert_eq!((d.body.as_slice(), w.body.as_slice()), (&b"OK"[..], &b"OK"[..]));
    assert!(d.header("api-version").is_some() && w.header("api-version") == Some("1.44"));
    assert_eq!(w.header("ostype"), d.header("ostype"));

    let (d, w) = both("GET", &format!("{v}/version"), None);
    same_shape(
        "version",
        &d.json(),
        &w.json(),
        &[
            "/Version",
            "/ApiVersion",
            "/MinAPIVersion",
            "/Os",
            "/Arch",
            "/KernelVersion",
            "/Components/0/Name",
        ],
    );
    assert_eq!(d.json()["Os"], w.json()["Os"]);

    let create = r#"{"Image":"busybox","Cmd":["sh","-c","echo out; echo err >&2; exit 3"],"HostConfig":{"NetworkMode":"none"}}"#;
    let target = format!("{v}/containers/create?name={name}");
    let (d, w) = both("POST", &target, Some(create));
    assert_eq!((d.status, w.status), (201, 201), "{}", String::from_utf8_lossy(&w.body));
    same_shape("create", &d.json(), &w.json(), &["/Id", "/Warnings"]);
    let (did, wid) =
        (d.json()["Id"].as_str().unwrap().to_string(), w.json()["Id"].as_str().unwrap().to_string());

    // A name in use: 409 and Docker's words, from both.
    let (d, w) = both("POST", &target, Some(create));
    assert_eq!((d.status, w.status), (409, 409));
    let conflict = format!("Conflict. The container name \"/{name}\" is already in use by container");
    assert!(d.json()["message"].as_str().unwrap().starts_with(&conflict), "{}", d.json());
    assert!(w.json()["message"].as_str().unwrap().starts_with(&conflict), "{}", w.json());

    let (d, w) = (
        call(&dockerd, "POST", &format!("{v}/containers/{did}/start"), None),
        call(&weft, "POST", &format!("{v}/containers/{wid}/start"), None),
    );
    assert_eq!((d.status, w.status), (204, 204), "{}", String::from_utf8_lossy(&w.body));
    let (d, w) = (
        call(&dockerd, "POST", &format!("{v}/containers/{did}/wait"), None),
        call(&weft, "POST", &format!("{v}/containers/{wid}/wait"), None),
    );
    assert_eq!((d.status, w.status), (200, 200));
    assert_eq!((d.json()["StatusCode"].as_i64(), w.json()["StatusCode"].as_i64()), (Some(3), Some(3)));

    let logs = "logs?stdout=1&stderr=1";
    let (d, w) = (
        call(&dockerd, "GET", &format!("{v}/containers/{did}/{logs}"), None),
        call(&weft, "GET", &format!("{v}/containers/{wid}/{logs}"), None),
    );
    assert_eq!((d.status, w.status), (200, 200));
    // Two pipes: the order between stdout and stderr is not kept, by either.
    let sorted = |mut f: Vec<(u8, String)>| {
        f.sort();
        f
    };
    let want = vec![(1u8, "out\n".to_string()), (2u8, "err\n".to_string())];
    assert_eq!(sorted(frames(&d.body)), want, "dockerd's framing");
    assert_eq!(sorted(frames(&w.body)), want, "weft's framing is dockerd's");

    let (d, w) = (
        call(&dockerd, "GET", &format!("{v}/containers/{did}/json"), None),
        call(&weft, "GET", &format!("{v}/containers/{wid}/json"), None),
    );
    let (dj, wj) = (d.json(), w.json());
    same_shape(
        "inspect",
        &dj,
        &wj,
        &[
            "/Id",
            "/Created",
            "/Path",
            "/Args",
            "/Name",
            "/RestartCount",
            "/State/Status",
            "/State/Running",
            "/State/ExitCode",
            "/State/Pid",
            "/State/OOMKilled",
            "/State/StartedAt",
            "/State/FinishedAt",
            "/Image",
            "/Config/Cmd",
            "/Config/Image",
            "/Config/Tty",
            "/HostConfig/NetworkMode",
            "/HostConfig/AutoRemove",
            "/HostConfig/RestartPolicy/Name",
            "/NetworkSettings/Networks",
            "/Mounts",
        ],
    );
    for p in ["/State/Status", "/State/ExitCode", "/Name", "/HostConfig/NetworkMode", "/Config/Cmd", "/Path"]
    {
        assert_eq!(dj.pointer(p), wj.pointer(p), "inspect {p}");
    }

    let (d, w) = both("GET", &format!("{v}/containers/json?all=1"), None);
    let pick = |list: serde_json::Value, id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["Id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed"))
    };
    let (dc, wc) = (pick(d.json(), &did), pick(w.json(), &wid));
    same_shape(
        "ps",
        &dc,
        &wc,
        &[
            "/Id",
            "/Names",
            "/Image",
            "/ImageID",
            "/Command",
            "/Created",
            "/Ports",
            "/Labels",
            "/State",
            "/Status",
            "/HostConfig/NetworkMode",
            "/NetworkSettings/Networks",
            "/Mounts",
        ],
    );
    assert_eq!((dc["State"].clone(), dc["Names"].clone()), (wc["State"].clone(), wc["Names"].clone()));
    assert!(wc["Status"].as_str().unwrap().starts_with("Exited (3)"), "{wc}");

    let (d, w) = (
        call(&dockerd, "DELETE", &format!("{v}/containers/{did}"), None),
        call(&weft, "DELETE", &format!("{v}/containers/{wid}"), None),
    );
    assert_eq!((d.status, w.status), (204, 204));
    let (d, w) = (
        call(&dockerd, "GET", &format!("{v}/containers/{did}/json"), None),
        call(&weft, "GET", &format!("{v}/containers/{wid}/json"), None),
    );
    assert_eq!((d.status, w.status), (404, 404));
    assert_eq!(d.json()["message"], format!("No such container: {did}"));
    assert_eq!(w.json()["message"], format!("No such container: {wid}"));

    let (d, w) = both("GET", &format!("{v}/images/json"), None);
    let (dj, wj) = (d.json(), w.json());
    let busybox = |list: &serde_json::Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["RepoTags"].to_string().contains("busybox:latest"))
            .cloned()
            .unwrap()
    };
    same_shape(
        "images",
        &busybox(&dj),
        &busybox(&wj),
        &[
            "/Id",
            "/ParentId",
            "/RepoTags",
            "/RepoDigests",
            "/Created",
            "/Size",
            "/SharedSize",
            "/Labels",
            "/Containers",
        ],
    );

    for (target, method, body, status, message) in [
        (format!("{v}/images/nosuch/json"), "GET", None, 404, Some("No such image: nosuch:latest")),
        (format!("{v}/containers/create"), "POST", Some("{not json"), 400, None),
        (format!("{v}/networks/nosuchnet"), "GET", None, 404, Some("network nosuchnet not found")),
        (format!("{v}/nothing/here"), "GET", None, 404, Some("page not found")),
    ] {
        let (d, w) = both(method, &target, body);
        assert_eq!(w.status, status, "{method} {target}: {}", String::from_utf8_lossy(&w.body));
        // A malformed body is a 500 in dockerd 20.10 and a 400 in newer engines: weft answers
        // as the newer ones.
        let dockerd_status = if d.status == 500 && body.is_some() { 400 } else { d.status };
        assert_eq!(dockerd_status, status, "dockerd: {method} {target}");
        same_shape(&target, &d.json(), &w.json(), &["/message"]);
        if let Some(m) = message {
            // dockerd 20.10 prefixes some messages with its own cause ("no such image: nosuch: ").
            let (dm, wm) = (d.json()["message"].to_string(), w.json()["message"].to_string());
            assert!(
                dm.ends_with(&format!("{m}\"")) && wm.ends_with(&format!("{m}\"")),
                "{target}: {dm} / {wm}"
            );
        }
    }

    let (d, w) = both("GET", &format!("{v}/networks"), None);
    let (dn, wn) = (d.json()[0].clone(), w.json());
    // weft's list may be empty on a fresh host: make one network to compare with.
    let wn = if wn.as_array().is_some_and(|a| a.is_empty()) {
        let made = call(
            &weft,
            "POST",
            &format!("{v}/networks/create"),
            Some(r#"{"Name":"diffnet","Driver":"bridge"}"#),
        );
        assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
        same_shape(
            "network create",
            &serde_json::json!({"Id": "", "Warning": ""}),
            &made.json(),
            &["/Id", "/Warning"],
        );
        call(&weft, "GET", &format!("{v}/networks"), None).json()[0].clone()
    } else {
        wn[0].clone()
    };
    same_shape(
        "networks",
        &dn,
        &wn,
        &[
            "/Name",
            "/Id",
            "/Created",
            "/Scope",
            "/Driver",
            "/EnableIPv6",
            "/IPAM/Driver",
            "/IPAM/Config",
            "/Internal",
            "/Attachable",
            "/Ingress",
            "/Containers",
            "/Options",
            "/Labels",
        ],
    );
}

/// docker-compose (1.29, docker-py) brings a two-service project up on weft: an overlay network
/// with the subnet the file gives, the services finding each other by name, a published port
/// answering from the other host; `down` removes the containers and the network.
#[test]
fn docker_compose_drives_weft() {
    let bed = VirtualHosts::new(2);
    let mut cluster = WeftCluster::new(&bed);
    cluster.docker_api = true;
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    let dir = cluster.scratch().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    let serve = |what: &str| {
        format!(
            "[\"sh\", \"-c\", \"mkdir -p /srv && echo from-{what} > /srv/index.html && exec httpd -f -p 80 -h /srv\"]"
        )
    };
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"3.7\"\nservices:\n  db:\n    image: busybox\n    command: {}\n    networks: [app]\n  web:\n    image: busybox\n    command: {}\n    ports: [\"8090:80\"]\n    networks: [app]\n    depends_on: [db]\nnetworks:\n  app:\n    driver: overlay\n    ipam:\n      config:\n        - subnet: 10.94.0.0/16\n",
            serve("db"),
            serve("web")
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let out = client(&cluster, 0, "docker-compose")
            .args(["-p", "wc"])
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("docker-compose on PATH (.ci/run installs it)");
        assert!(out.status.success(), "docker-compose {args:?}: {}{}", stdout(&out), stderr(&out));
        format!("{}{}", stdout(&out), stderr(&out))
    };
    compose(&["up", "-d"]);
    let ps = docker_ok(&cluster, 0, &["ps", "--format", "{{.Names}}"]);
    assert!(ps.contains("wc_web_1") && ps.contains("wc_db_1"), "{ps}");
    let listed = compose(&["ps"]);
    assert!(
        listed.contains("wc_web_1") && listed.contains("Up"),
        "compose finds its containers by label: {listed}"
    );
    let net: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(0, &["network", "inspect", "wc_app"])).unwrap();
    assert_eq!(net[0]["subnets"][0], "10.94.0.0/16", "{net}");
    cluster.eventually("web reaches db by name", Duration::from_secs(10), || {
        // (busybox-static's wget crashes resolving names through glibc's NSS; nc does not.)
        let get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 db 80";
        let out = docker(&cluster, 0, &["exec", "wc_web_1", "sh", "-c", get]);
        stdout(&out).contains("from-db")
    });
    let url = format!("http://{}:8090/", bed.host(0).addr);
    cluster.eventually("curl from h1 to the published port", Duration::from_secs(10), || {
        stdout(&bed.host(1).output("curl", &["-s", "--max-time", "2", &url])).contains("from-web")
    });
    compose(&["down"]);
    assert!(docker_ok(&cluster, 0, &["ps", "-aq"]).trim().is_empty(), "down removed the containers");
    assert!(!cluster.weft_ok(0, &["network", "ls"]).contains("wc_app"), "down removed the network");
}
