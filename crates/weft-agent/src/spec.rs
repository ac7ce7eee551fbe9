//! A container's spec from its image and a `weft run` request, with Docker's rules: the request's
//! entrypoint replaces the image's (and drops its Cmd), its command replaces the image's Cmd, its
//! environment overrides the image's by key. Pure.

use std::path::PathBuf;

use serde_json::Value;
use weft_proto::v1 as pb;
use weft_runtime::container::{
    BindMount, ContainerSpec, DeviceMapping, SeccompMode, Security, SpecLimits, TmpfsMount,
};
use weft_runtime::image::ImageRecord;

use crate::error::{HostError, Result};

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
    if target.split('/').any(|c| c == "..") {
        return Err(HostError::Invalid(format!(
            "-v {text}: the container path must not contain '..' (it could point outside the container)"
        )));
    }
    Ok(BindMount { source: PathBuf::from(source), target: PathBuf::from(target), readonly })
}

/// Parses `--device HOST[:CONTAINER][:PERMISSIONS]` (Docker's forms: `/dev/sdb`,
/// `/dev/sdb:/dev/xvdc`, `/dev/sdb:r`, `/dev/sdb:/dev/xvdc:rw`).
pub fn parse_device(text: &str) -> Result<DeviceMapping> {
    let is_access = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, a] if is_access(a) => (*h, *h, *a),
        [h, c] => (*h, *c, "rwm"),
        [h, c, a] if is_access(a) => (*h, *c, *a),
        _ => {
            return Err(HostError::Invalid(format!(
                "--device {text}: expected HOST[:CONTAINER][:PERMISSIONS] with permissions of r, w, m"
            )));
        }
    };
    if !host.starts_with('/') || !container.starts_with('/') || container.split('/').any(|c| c == "..") {
        return Err(HostError::Invalid(format!(
            "--device {text}: both paths must be absolute, without '..'"
        )));
    }
    Ok(DeviceMapping { host: host.into(), container: container.into(), access: access.into() })
}

/// Parses `--tmpfs PATH[:OPTIONS]`.
pub fn parse_tmpfs(text: &str) -> Result<TmpfsMount> {
    let (target, options) = text.split_once(':').unwrap_or((text, ""));
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err(HostError::Invalid(format!("--tmpfs {text}: the path must be absolute, without '..'")));
    }
    Ok(TmpfsMount { target: target.into(), options: options.into() })
}

/// The security options of a run request: `--privileged`, `--cap-add/--cap-drop`, `--device`,
/// `--tmpfs` and `--security-opt` (`seccomp=unconfined`, `seccomp=<profile JSON>`,
/// `no-new-privileges[=|:true|false]`). Anything else is refused by name.
pub fn security(request: &pb::RunRequest) -> Result<Security> {
    let mut security = Security {
        privileged: request.privileged,
        cap_add: request.cap_add.clone(),
        cap_drop: request.cap_drop.clone(),
        devices: request.devices.iter().map(|d| parse_device(d)).collect::<Result<_>>()?,
        tmpfs: request.tmpfs.iter().map(|t| parse_tmpfs(t)).collect::<Result<_>>()?,
        ..Security::default()
    };
    for option in &request.security_opt {
        let (key, value) = match option.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => security.seccomp = SeccompMode::Unconfined,
            ("seccomp", Some(profile)) if profile.trim_start().starts_with('{') => {
                security.seccomp = SeccompMode::Profile(profile.to_string())
            }
            ("no-new-privileges", None | Some("true")) => security.allow_new_privileges = false,
            ("no-new-privileges", Some("false")) => security.allow_new_privileges = true,
            _ => {
                let shown: String = option.chars().take(60).collect();
                return Err(HostError::Invalid(format!(
                    "--security-opt {shown}: expected seccomp=unconfined, seccomp=PROFILE.json or \
                     no-new-privileges[=true|false]"
                )));
            }
        }
    }
    Ok(security)
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
    spec.readonly_rootfs = request.read_only;
    spec.security = security(request)?;
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
        assert!(parse_volume("/a:/b/../../etc").unwrap_err().to_string().contains("'..'"));
    }

    #[test]
    fn devices_tmpfs_and_security_options() {
        let d = parse_device("/dev/sdb").unwrap();
        assert_eq!((d.container.to_str().unwrap(), d.access.as_str()), ("/dev/sdb", "rwm"));
        let d = parse_device("/dev/sdb:r").unwrap();
        assert_eq!((d.container.to_str().unwrap(), d.access.as_str()), ("/dev/sdb", "r"));
        let d = parse_device("/dev/sdb:/dev/xvdc:rw").unwrap();
        assert_eq!((d.container.to_str().unwrap(), d.access.as_str()), ("/dev/xvdc", "rw"));
        assert!(parse_device("/dev/sdb:/dev/x:q").is_err());
        assert!(parse_device("sdb").is_err());
        assert_eq!(parse_tmpfs("/run:size=1m").unwrap().options, "size=1m");
        assert!(parse_tmpfs("/run/../x").is_err());
        let mut r = pb::RunRequest { security_opt: vec!["seccomp=unconfined".into()], ..Default::default() };
        assert_eq!(security(&r).unwrap().seccomp, SeccompMode::Unconfined);
        r.security_opt = vec!["no-new-privileges:false".into()];
        assert!(security(&r).unwrap().allow_new_privileges);
        r.security_opt = vec!["apparmor=unconfined".into()];
        assert!(security(&r).unwrap_err().to_string().contains("--security-opt apparmor"));
    }
}
