//! weft's exit statuses, as Docker's client gives them: 125 for weft's own errors, 126 when the
//! container's command cannot be invoked, 127 when it does not exist, and the command's own
//! status otherwise, for `weft run` and `weft exec` alike.

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr};

#[test]
fn run_and_exec_exit_as_docker_does() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    let code = |args: &[&str]| {
        let out = cluster.weft(0, args);
        (out.status.code(), stderr(&out))
    };
    let none = ["--network", "none"];
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(&none);
        args.extend_from_slice(extra);
        code(&args)
    };
    // A reader that goes away ends weft quietly (no panic on the broken pipe).
    let socket = format!("unix://{}", cluster.socket(0).display());
    let weft = weft_tests::cluster::bin("weft");
    let piped = std::process::Command::new("sh")
        .args(["-c", &format!("{} -H {socket} node ls --format json | true", weft.display())])
        .output()
        .unwrap();
    assert!(!stderr(&piped).contains("panicked"), "{}", stderr(&piped));
    // weft's own errors: a bad flag, an unknown image, bad input.
    assert_eq!(code(&["run", "--no-such-flag", "busybox"]).0, Some(125));
    let (status, text) = run(&["no-such-image", "true"]);
    assert_eq!(status, Some(125), "{text}");
    assert_eq!(run(&["-e", "NOVALUE", "busybox", "true"]).0, Some(125));
    // The command: missing, not executable, and its own status.
    let (status, text) = run(&["busybox", "/no/such/command"]);
    assert_eq!(status, Some(127), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    let (status, text) = run(&["busybox", "/etc"]);
    assert_eq!(status, Some(126), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
    assert_eq!(run(&["busybox", "sh", "-c", "exit 3"]).0, Some(3));
    assert_eq!(run(&["busybox", "true"]).0, Some(0));
    // A refused run leaves no container behind.
    let ps = cluster.weft_ok(0, &["ps", "-a", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ps).unwrap().as_array().map(Vec::len),
        Some(0),
        "{ps}"
    );

    // exec into a running container.
    cluster.weft_ok(0, &["run", "-d", "--name", "c", "--network", "none", "busybox", "sleep", "600"]);
    let (status, text) = code(&["exec", "c", "/no/such/command"]);
    assert_eq!(status, Some(127), "{text}");
    assert_eq!(code(&["exec", "c", "/etc"]).0, Some(126));
    assert_eq!(code(&["exec", "c", "sh", "-c", "exit 4"]).0, Some(4));
    assert_eq!(code(&["exec", "no-such-container", "true"]).0, Some(125));
}
