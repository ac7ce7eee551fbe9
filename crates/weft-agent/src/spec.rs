//! A container's spec from its image and a `weft run` request, with Docker's rules: the request's
//! entrypoint replaces the image's (and drops its Cmd), its command replaces the image's Cmd, its
//! environment overrides the image's by key. Pure.

use std::path::PathBuf;

use serde_json::Value;
use weft_proto::v1 as pb;
use weft_runtime::container::{BindMount, ContainerSpec, SpecLimits};
use weft_runtime::image::ImageRecord;

use crate::host::{HostError, Result};

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Parses `-v HOST:CONTAINER[:ro|rw]`.
pub fn parse_volume(text: &str) -> Result<BindMount> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, readonly) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        _ => return Err(HostError::Invalid(format!("-v {text}: expected HOST_PATH:CONTAINER_PATH[:ro|rw]"))),
    };
    if !source.starts_with('/') || !target.starts_with('/') {
        return Err(HostError::Invalid(format!("-v {text}: both paths must be absolute")));
    }
    Ok(BindMount { source: PathBuf::from(source), target: PathBuf::from(target), readonly })
}

/// The spec of a container of `image` (unpacked into `layers`) as `request` asks.
pub fn container_spec(
    image: &ImageRecord,
    layers: Vec<PathBuf>,
    request: &pb::RunRequest,
) -> Result<ContainerSpec> {
    let config = image.runtime_config();
    let (entrypoint, cmd) = if request.has_entrypoint {
        (request.entrypoint.clone(), request.command.clone())
    } else if request.command.is_empty() {
        (strings(&config["Entrypoint"]), strings(&config["Cmd"]))
    } else {
        (strings(&config["Entrypoint"]), request.command.clone())
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    let mut env = strings(&config["Env"]);
    for pair in &request.env {
        let Some((key, _)) = pair.split_once('=') else {
            return Err(HostError::Invalid(format!("-e {pair}: expected KEY=VALUE")));
        };
        if key.is_empty() {
            return Err(HostError::Invalid(format!("-e {pair}: empty variable name")));
        }
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(pair.clone());
    }
    if request.cpus < 0.0 || request.cpus.is_nan() {
        return Err(HostError::Invalid(format!("--cpus {}: must be positive", request.cpus)));
    }
    let mut spec = ContainerSpec::new(layers, argv);
    spec.name = request.name.clone();
    spec.image = image.id.clone();
    spec.env = env;
    spec.cwd = if !request.workdir.is_empty() {
        request.workdir.clone()
    } else {
        config["WorkingDir"].as_str().filter(|w| !w.is_empty()).unwrap_or("/").to_string()
    };
    spec.user = if request.user.is_empty() {
        config["User"].as_str().unwrap_or("").to_string()
    } else {
        request.user.clone()
    };
    spec.hostname = request.hostname.clone();
    spec.limits = SpecLimits {
        memory: (request.memory > 0).then_some(request.memory),
        cpus: (request.cpus > 0.0).then_some(request.cpus),
        pids: (request.pids_limit > 0).then_some(request.pids_limit),
    };
    spec.mounts = request.volumes.iter().map(|v| parse_volume(v)).collect::<Result<_>>()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> ImageRecord {
        ImageRecord {
            id: "sha256:abc".into(),
            names: vec!["busybox:latest".into()],
            diff_ids: vec![],
            config: json!({"config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv"}}),
        }
    }

    #[test]
    fn docker_rules_for_command_and_env() {
        let mut r = pb::RunRequest { image: "busybox".into(), ..Default::default() };
        let s = container_spec(&image(), vec![], &r).unwrap();
        assert_eq!(s.argv, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(s.cwd, "/srv");
        r.command = vec!["echo bye".into()];
        r.env = vec!["A=2".into(), "B=3".into()];
        let s = container_spec(&image(), vec![], &r).unwrap();
        assert_eq!(s.argv, ["/bin/sh", "-c", "echo bye"]);
        assert_eq!(s.env, ["PATH=/bin", "A=2", "B=3"]);
        r.has_entrypoint = true;
        r.entrypoint = vec!["/bin/true".into()];
        r.command = vec![];
        assert_eq!(container_spec(&image(), vec![], &r).unwrap().argv, ["/bin/true"]);
        r.env = vec!["NOVALUE".into()];
        assert!(container_spec(&image(), vec![], &r).unwrap_err().to_string().contains("KEY=VALUE"));
    }

    #[test]
    fn volumes() {
        assert!(parse_volume("/a:/b:ro").unwrap().readonly);
        assert!(parse_volume("a:/b").unwrap_err().to_string().contains("absolute"));
        assert!(parse_volume("/a").unwrap_err().to_string().contains("expected"));
    }
}
