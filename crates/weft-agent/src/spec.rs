//! A container's spec from its image and a `weft run` request, with Docker's rules: the request's
//! entrypoint replaces the image's (and drops its Cmd), its command replaces the image's Cmd, its
//! environment overrides the image's by key. Pure.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weft_proto::v1 as pb;
use weft_runtime::container::{
    BindMount, ContainerSpec, DeviceMapping, HealthConfig, SeccompMode, Security, SpecLimits, TmpfsMount,
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
    spec.stop_signal = stop_signal(config, &request.stop_signal)?;
    spec.healthcheck = healthcheck(&config["Healthcheck"], request)?;
    Ok(spec)
}

/// The signal `stop` sends first: `--stop-signal`, else the image's STOPSIGNAL, else none
/// (SIGTERM). Names (`SIGUSR1`, `usr1`) or numbers, as Docker takes them.
pub fn stop_signal(config: &Value, flag: &str) -> Result<Option<i32>> {
    let (text, whence) = if flag.is_empty() {
        (config["StopSignal"].as_str().unwrap_or(""), "the image's STOPSIGNAL")
    } else {
        (flag, "--stop-signal")
    };
    if text.is_empty() {
        return Ok(None);
    }
    signal_number(text)
        .map(Some)
        .ok_or_else(|| HostError::Invalid(format!("{whence} {text:?}: not a signal name or number")))
}

/// `SIGUSR1`, `USR1`, `usr1` or `10`.
fn signal_number(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

/// The container's health check: the image's HEALTHCHECK (Docker's `Healthcheck` config,
/// durations in nanoseconds) with `--health-*` laid over it; none for `["NONE"]`, an image
/// without one, or `--no-healthcheck`.
pub fn healthcheck(image: &Value, request: &pb::RunRequest) -> Result<Option<HealthConfig>> {
    let duration = |flag: &str, text: &str, image_ns: &Value, default: Duration| -> Result<Duration> {
        if !text.is_empty() {
            return weft_runtime::duration::parse(text)
                .map_err(|e| HostError::Invalid(format!("{flag}: {e}")));
        }
        Ok(match image_ns.as_u64() {
            Some(ns) if ns > 0 => Duration::from_nanos(ns),
            _ => default,
        })
    };
    let any_flag = !request.health_interval.is_empty()
        || !request.health_timeout.is_empty()
        || !request.health_start_period.is_empty()
        || request.health_retries > 0;
    if request.no_healthcheck {
        if !request.health_cmd.is_empty() || any_flag {
            return Err(HostError::Invalid("--no-healthcheck conflicts with the --health-* options".into()));
        }
        return Ok(None);
    }
    let test = if !request.health_cmd.is_empty() {
        vec!["CMD-SHELL".to_string(), request.health_cmd.clone()]
    } else {
        strings(&image["Test"])
    };
    match test.first().map(String::as_str) {
        None | Some("NONE") => {
            if any_flag {
                return Err(HostError::Invalid(
                    "--health-interval, --health-timeout, --health-start-period and --health-retries need a health check: the image has none, give --health-cmd".into(),
                ));
            }
            return Ok(None);
        }
        Some("CMD" | "CMD-SHELL") if test.len() > 1 => {}
        Some(other) => {
            return Err(HostError::Invalid(format!(
                "health check {test:?}: expected [\"CMD\", ...] or [\"CMD-SHELL\", command], got {other:?}"
            )));
        }
    }
    let interval = duration(
        "--health-interval",
        &request.health_interval,
        &image["Interval"],
        HealthConfig::DEFAULT_INTERVAL,
    )?;
    let timeout = duration(
        "--health-timeout",
        &request.health_timeout,
        &image["Timeout"],
        HealthConfig::DEFAULT_TIMEOUT,
    )?;
    let start_period = duration(
        "--health-start-period",
        &request.health_start_period,
        &image["StartPeriod"],
        Duration::ZERO,
    )?;
    if interval.is_zero() || timeout.is_zero() {
        return Err(HostError::Invalid(
            "--health-interval and --health-timeout must be longer than 0".into(),
        ));
    }
    let retries = match request.health_retries {
        0 => image["Retries"].as_u64().filter(|r| *r > 0).map_or(HealthConfig::DEFAULT_RETRIES, |r| r as u32),
        n => n,
    };
    Ok(Some(HealthConfig { test, interval, timeout, start_period, retries }))
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
    fn stop_signal_from_the_flag_or_the_image() {
        let image = json!({"StopSignal": "SIGUSR1"});
        assert_eq!(stop_signal(&image, "").unwrap(), Some(libc::SIGUSR1));
        assert_eq!(stop_signal(&image, "hup").unwrap(), Some(libc::SIGHUP));
        assert_eq!(stop_signal(&image, "9").unwrap(), Some(libc::SIGKILL));
        assert_eq!(stop_signal(&json!({}), "").unwrap(), None);
        assert!(stop_signal(&image, "SIGNOPE").unwrap_err().to_string().contains("--stop-signal"));
        assert!(stop_signal(&json!({"StopSignal": "x"}), "").unwrap_err().to_string().contains("STOPSIGNAL"));
    }

    #[test]
    fn health_checks_from_the_image_and_the_flags() {
        let image = json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64, "Retries": 2});
        let none = pb::RunRequest::default();
        let h = healthcheck(&image, &none).unwrap().unwrap();
        assert_eq!(
            (h.argv(), h.interval, h.timeout, h.start_period, h.retries),
            (
                vec!["/bin/sh".to_string(), "-c".into(), "true".into()],
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::ZERO,
                2
            )
        );
        let flags = pb::RunRequest {
            health_cmd: "wget -q localhost".into(),
            health_interval: "1s".into(),
            health_start_period: "1m30s".into(),
            ..Default::default()
        };
        let h = healthcheck(&image, &flags).unwrap().unwrap();
        assert_eq!(
            (h.test[1].as_str(), h.interval, h.start_period, h.retries),
            ("wget -q localhost", Duration::from_secs(1), Duration::from_secs(90), 2)
        );
        assert_eq!(healthcheck(&json!({"Test": ["NONE"]}), &none).unwrap(), None);
        assert_eq!(healthcheck(&json!(null), &none).unwrap(), None);
        let off = pb::RunRequest { no_healthcheck: true, ..Default::default() };
        assert_eq!(healthcheck(&image, &off).unwrap(), None);
        for (bad, why) in [
            (
                pb::RunRequest { no_healthcheck: true, health_cmd: "x".into(), ..Default::default() },
                "conflicts",
            ),
            (pb::RunRequest { health_interval: "5".into(), ..Default::default() }, "missing unit"),
            (pb::RunRequest { health_interval: "0".into(), ..Default::default() }, "longer than 0"),
        ] {
            assert!(healthcheck(&image, &bad).unwrap_err().to_string().contains(why), "{why}");
        }
        let lone = pb::RunRequest { health_retries: 5, ..Default::default() };
        assert!(healthcheck(&json!(null), &lone).unwrap_err().to_string().contains("--health-cmd"));
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
