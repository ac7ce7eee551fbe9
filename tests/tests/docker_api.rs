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

/// The docker client pointed at host `i`'s weftd, with a configuration of its own.
fn docker(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> Output {
    let config = cluster.scratch().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", cluster.docker_socket(i).display()))
        .env("DOCKER_CONFIG", &config)
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT")
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

    // stop, inspect, rm -f, images.
    docker_ok(&cluster, 0, &["stop", "-t", "1", "web"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&docker_ok(&cluster, 0, &["inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["State"]["Status"], "exited", "{inspect}");
    docker_ok(&cluster, 0, &["rm", "-f", "web", "pub"]);
    assert!(cluster.weft_ok(0, &["ps", "-a"]).lines().count() <= 1, "removed from weft too");
    let images = docker_ok(&cluster, 0, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("busybox:latest"), "{images}");
    cluster.weft_ok(1, &["rm", "-f", "peer"]);
    assert!(docker_ok(&cluster, 0, &["network", "rm", "app"]).contains("app"));
    let gone = docker(&cluster, 0, &["network", "inspect", "app"]);
    assert!(!gone.status.success());
}
