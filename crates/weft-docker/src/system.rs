//! `/_ping`, `/version` and `/info`: what clients ask first, to negotiate the API version and
//! to show what they talk to.

use std::sync::Arc;

use http::StatusCode;
use weft_proto::v1 as pb;

use crate::engine::Engine;
use crate::error::ApiResult;
use crate::model::{self, Component, Version};
use crate::reply::{self, Reply};
use crate::route::{MAX_VERSION, MIN_VERSION, version_text};

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The machine's memory in bytes (0 when /proc/meminfo cannot be read): `/info`'s MemTotal and
/// the limit stats report for a container without one, as Docker's.
pub fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(String::from))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// `GET|HEAD /_ping`: "OK" (the version headers go on every answer).
pub fn ping() -> Reply {
    let mut r = reply::text(StatusCode::OK, "OK");
    r.headers_mut().insert("Builder-Version", http::HeaderValue::from_static("1"));
    r.headers_mut().insert("Swarm", http::HeaderValue::from_static("inactive"));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    r
}

/// `GET /version`.
pub fn version() -> Reply {
    let v = env!("CARGO_PKG_VERSION").to_string();
    reply::json(
        StatusCode::OK,
        &Version {
            version: v.clone(),
            api_version: version_text(MAX_VERSION),
            min_api_version: version_text(MIN_VERSION),
            os: "linux".into(),
            arch: model::go_arch().into(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            components: vec![Component { name: "Engine".into(), version: v }],
        },
    )
}

/// `GET /info`.
pub async fn info(engine: &Arc<Engine>) -> ApiResult<Reply> {
    let mut agent = engine.agent();
    let containers =
        agent.list_containers(pb::ListContainersRequest { all: true }).await?.into_inner().containers;
    let images = agent.list_images(pb::Empty {}).await?.into_inner().images;
    let running = containers.iter().filter(|c| c.state == "running").count();
    let created = engine.with_created(|c| c.len());
    let body = serde_json::json!({
        "ID": "",
        "Containers": containers.len() + created,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running,
        "Images": images.len(),
        "Driver": "overlay",
        "Name": read_trimmed("/proc/sys/kernel/hostname"),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "OperatingSystem": "weft",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total(),
        "DockerRootDir": "",
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "DefaultRuntime": "weft",
        "Runtimes": {"weft": {"path": "weftd"}},
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false},
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Plugins": {"Network": ["bridge", "overlay", "host", "null"], "Volume": [], "Log": ["json-file"]},
        "Warnings": [],
    });
    Ok(reply::json(StatusCode::OK, &body))
}
