//! `POST /containers/create`: Docker's create body (moby's `container.Config`, `HostConfig` and
//! `NetworkingConfig`) turned into weft's `RunRequest`. Every field the docker client sends is
//! either mapped, or harmless at its zero value; a field set to something weft cannot honour is
//! refused with a 400 naming it, never ignored.

use serde_json::{Map, Value};
use weft_proto::v1 as pb;

use crate::error::{ApiError, ApiResult};

/// A container the client created: what `start` will run.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// weft's run request (its `auto_remove` is decided at start, see [`CreateRequest::auto_remove`]).
    pub run: pb::RunRequest,
    /// `HostConfig.AutoRemove` (`docker run --rm`).
    pub auto_remove: bool,
}

/// Checks a name as Docker does (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an optional leading slash).
pub fn check_name(name: &str) -> ApiResult<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || bare.len() < 2 || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(ApiError::bad(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(bare.to_string())
}

/// Parses a create body. `name` is the `name` query parameter (may be empty).
pub fn parse(body: &[u8], name: &str) -> ApiResult<CreateRequest> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?;
    let Value::Object(top) = value else {
        return Err(ApiError::bad("malformed JSON body: expected an object (container.Config)"));
    };
    let mut config = Fields::new("Config", top);
    let mut run = pb::RunRequest {
        name: if name.is_empty() { String::new() } else { check_name(name)? },
        ..Default::default()
    };
    run.image = config.string("Image")?;
    if run.image.is_empty() {
        return Err(ApiError::bad("no image given: Config.Image is empty"));
    }
    run.hostname = config.string("Hostname")?;
    run.user = config.string("User")?;
    run.workdir = config.string("WorkingDir")?;
    run.env = config.strings("Env")?.unwrap_or_default();
    run.command = config.strings("Cmd")?.unwrap_or_default();
    if let Some(entrypoint) = config.strings("Entrypoint")? {
        run.has_entrypoint = true;
        // `--entrypoint ""` arrives as [""]: it clears the image's entrypoint.
        run.entrypoint = entrypoint.into_iter().filter(|s| !s.is_empty()).collect();
    }
    run.stop_signal = config.string("StopSignal")?;
    if let Some(labels) = config.take("Labels") {
        for (key, value) in object("Config.Labels", labels)? {
            let value = match value {
                Value::String(s) => s,
                other => {
                    return Err(ApiError::bad(format!(
                        "Config.Labels[{key:?}] must be a string, not {other}"
                    )));
                }
            };
            run.labels.push(pb::Label { key, value });
        }
    }
    if let Some(t) = config.int("StopTimeout")? {
        run.stop_grace =
            u32::try_from(t).map_err(|_| ApiError::bad(format!("Config.StopTimeout {t} is out of range")))?;
    }
    if let Some(check) = config.take("Healthcheck") {
        healthcheck(check, &mut run)?;
    }
    for harmless in ["AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "ArgsEscaped", "Shell"] {
        config.ignore(harmless);
    }
    if config.bool("Tty")? {
        return Err(ApiError::unsupported("Config.Tty (docker run -t): run without -t"));
    }
    if config.bool("OpenStdin")? {
        return Err(ApiError::unsupported("Config.OpenStdin (docker run -i): run without -i"));
    }
    config.ignore("StdinOnce");
    let host = config.take("HostConfig");
    let networking = config.take("NetworkingConfig");
    config.finish()?;

    let mut auto_remove = false;
    if let Some(host) = host {
        auto_remove = host_config(object("HostConfig", host)?, &mut run)?;
    }
    if let Some(networking) = networking {
        networking_config(object("NetworkingConfig", networking)?, &mut run)?;
    }
    Ok(CreateRequest { run, auto_remove })
}

fn host_config(map: Map<String, Value>, run: &mut pb::RunRequest) -> ApiResult<bool> {
    let mut h = Fields::new("HostConfig", map);
    run.volumes = h.strings("Binds")?.unwrap_or_default();
    run.network = match h.string("NetworkMode")?.as_str() {
        "" | "default" => String::new(),
        other => other.to_string(),
    };
    if let Some(bindings) = h.take("PortBindings") {
        run.publish = port_bindings(object("HostConfig.PortBindings", bindings)?)?;
    }
    if let Some(policy) = h.take("RestartPolicy") {
        let mut p = Fields::new("HostConfig.RestartPolicy", object("HostConfig.RestartPolicy", policy)?);
        let name = p.string("Name")?;
        let retries = p.int("MaximumRetryCount")?.unwrap_or(0);
        p.finish()?;
        run.restart = match (name.as_str(), retries) {
            ("on-failure", n) if n > 0 => format!("on-failure:{n}"),
            (_, n) if n > 0 => {
                return Err(ApiError::bad(format!(
                    "maximum retry count cannot be used with restart policy '{name}'"
                )));
            }
            ("", _) => String::new(),
            (name, _) => name.to_string(),
        };
    }
    let auto_remove = h.bool("AutoRemove")?;
    run.privileged = h.bool("Privileged")?;
    run.read_only = h.bool("ReadonlyRootfs")?;
    run.cap_add = h.strings("CapAdd")?.unwrap_or_default();
    run.cap_drop = h.strings("CapDrop")?.unwrap_or_default();
    run.security_opt = h.strings("SecurityOpt")?.unwrap_or_default();
    if let Some(memory) = h.int("Memory")? {
        run.memory =
            u64::try_from(memory).map_err(|_| ApiError::bad("HostConfig.Memory must not be negative"))?;
    }
    if let Some(nano) = h.int("NanoCpus")? {
        run.cpus = nano as f64 / 1e9;
    }
    if let Some(pids) = h.int("PidsLimit")? {
        // 0 and -1 mean "no limit" in Docker.
        run.pids_limit = u64::try_from(pids).unwrap_or(0);
    }
    if let Some(devices) = h.take("Devices") {
        let Value::Array(list) = devices else {
            return Err(ApiError::bad("HostConfig.Devices must be a list"));
        };
        for device in list {
            let mut d = Fields::new("HostConfig.Devices[]", object("HostConfig.Devices[]", device)?);
            let (on_host, inside, perms) =
                (d.string("PathOnHost")?, d.string("PathInContainer")?, d.string("CgroupPermissions")?);
            d.finish()?;
            let mut text = on_host;
            for part in [inside, perms].into_iter().filter(|p| !p.is_empty()) {
                text = format!("{text}:{part}");
            }
            run.devices.push(text);
        }
    }
    if let Some(tmpfs) = h.take("Tmpfs") {
        for (path, options) in object("HostConfig.Tmpfs", tmpfs)? {
            match options.as_str() {
                Some("") | None => run.tmpfs.push(path),
                Some(o) => run.tmpfs.push(format!("{path}:{o}")),
            }
        }
    }
    if let Some(log) = h.take("LogConfig") {
        let mut l = Fields::new("HostConfig.LogConfig", object("HostConfig.LogConfig", log)?);
        let kind = l.string("Type")?;
        if !matches!(kind.as_str(), "" | "json-file" | "local") {
            return Err(ApiError::unsupported(format!(
                "the {kind:?} log driver: weftd keeps a container's output in its own files"
            )));
        }
        l.finish()?;
    }
    for harmless in ["ConsoleSize", "ContainerIDFile"] {
        h.ignore(harmless);
    }
    // -1 (or unset) is the kernel's default, what the client sends when the user said nothing.
    if let Some(swappiness) = h.int("MemorySwappiness")?.filter(|s| *s != -1) {
        return Err(ApiError::unsupported(format!(
            "HostConfig.MemorySwappiness {swappiness} (--memory-swappiness)"
        )));
    }
    for (key, allowed) in [("Isolation", "default"), ("CgroupnsMode", "private"), ("IpcMode", "private")] {
        let value = h.string(key)?;
        if !value.is_empty() && value != allowed {
            return Err(ApiError::unsupported(format!("HostConfig.{key} {value:?}")));
        }
    }
    h.finish()?;
    Ok(auto_remove)
}

fn networking_config(map: Map<String, Value>, run: &mut pb::RunRequest) -> ApiResult<()> {
    let mut n = Fields::new("NetworkingConfig", map);
    let endpoints = n.take("EndpointsConfig");
    n.finish()?;
    let Some(endpoints) = endpoints else { return Ok(()) };
    let endpoints = object("NetworkingConfig.EndpointsConfig", endpoints)?;
    if endpoints.len() > 1 {
        return Err(ApiError::unsupported(
            "connecting a new container to several networks at create: connect the others with `docker network connect`",
        ));
    }
    for (network, settings) in endpoints {
        let mode = if run.network.is_empty() { "bridge" } else { run.network.as_str() };
        let named = if network == "default" { "bridge" } else { network.as_str() };
        if named != mode {
            return Err(ApiError::bad(format!(
                "NetworkingConfig names network {network:?} but HostConfig.NetworkMode is {mode:?}"
            )));
        }
        let section = "NetworkingConfig.EndpointsConfig[]";
        let mut e = Fields::new(section, object(section, settings)?);
        run.aliases = e.strings("Aliases")?.unwrap_or_default();
        if let Some(ipam) = e.take("IPAMConfig") {
            let mut i = Fields::new("IPAMConfig", object("IPAMConfig", ipam)?);
            run.ip = i.string("IPv4Address")?;
            i.finish()?;
        }
        // Filled in by the daemon, or by old clients with what they read before: harmless.
        for harmless in [
            "NetworkID",
            "EndpointID",
            "Gateway",
            "IPAddress",
            "IPPrefixLen",
            "GlobalIPv6Address",
            "GlobalIPv6PrefixLen",
            "IPv6Gateway",
            "MacAddress",
            "DNSNames",
            "GwPriority",
        ] {
            e.ignore(harmless);
        }
        e.finish()?;
    }
    Ok(())
}

/// `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}` as weft's `-p` texts.
fn port_bindings(map: Map<String, Value>) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for (port, bindings) in map {
        let Value::Array(list) = bindings else {
            return Err(ApiError::bad(format!("HostConfig.PortBindings[{port:?}] must be a list")));
        };
        for binding in list {
            let section = "HostConfig.PortBindings[]";
            let mut b = Fields::new(section, object(section, binding)?);
            let (ip, host_port) = (b.string("HostIp")?, b.string("HostPort")?);
            b.finish()?;
            if host_port.is_empty() {
                return Err(ApiError::unsupported(format!(
                    "publishing {port} on a port the daemon picks: give the host port (-p HOST:{})",
                    port.split('/').next().unwrap_or(&port)
                )));
            }
            out.push(match ip.as_str() {
                "" => format!("{host_port}:{port}"),
                v6 if v6.contains(':') => format!("[{v6}]:{host_port}:{port}"),
                v4 => format!("{v4}:{host_port}:{port}"),
            });
        }
    }
    Ok(out)
}

/// `Config.Healthcheck`: a test as `["CMD-SHELL", cmd]`, `["CMD", args...]` or `["NONE"]`, and
/// durations in nanoseconds.
fn healthcheck(value: Value, run: &mut pb::RunRequest) -> ApiResult<()> {
    let mut h = Fields::new("Config.Healthcheck", object("Config.Healthcheck", value)?);
    let test = h.strings("Test")?.unwrap_or_default();
    match test.first().map(String::as_str) {
        None => {}
        Some("NONE") => run.no_healthcheck = true,
        Some("CMD-SHELL") if test.len() == 2 => run.health_cmd = test[1].clone(),
        Some("CMD") if test.len() > 1 => {
            run.health_cmd = test[1..].iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
        }
        _ => {
            return Err(ApiError::bad(format!(
                "Config.Healthcheck.Test {test:?} is not CMD, CMD-SHELL or NONE"
            )));
        }
    }
    let ms =
        |ns: Option<i64>| ns.filter(|n| *n > 0).map(|n| format!("{}ms", n / 1_000_000)).unwrap_or_default();
    run.health_interval = ms(h.int("Interval")?);
    run.health_timeout = ms(h.int("Timeout")?);
    run.health_start_period = ms(h.int("StartPeriod")?);
    run.health_retries = h.int("Retries")?.unwrap_or(0).clamp(0, u32::MAX as i64) as u32;
    h.ignore("StartInterval");
    h.finish()
}

/// Quotes one argument for `/bin/sh -c`.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn object(section: &str, value: Value) -> ApiResult<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(ApiError::bad(format!("{section} must be an object, not {other}"))),
    }
}

/// The fields of one object of the body, taken one by one; what is left at the end must be
/// at its zero value.
struct Fields {
    section: &'static str,
    map: Map<String, Value>,
}

impl Fields {
    fn new(section: &'static str, map: Map<String, Value>) -> Fields {
        Fields { section, map }
    }

    /// The value of `key`, `None` when absent or null.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn ignore(&mut self, key: &str) {
        self.map.remove(key);
    }

    fn wrong(&self, key: &str, want: &str, got: &Value) -> ApiError {
        ApiError::bad(format!("{}.{key} must be {want}, not {got}", self.section))
    }

    fn string(&mut self, key: &str) -> ApiResult<String> {
        match self.take(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.wrong(key, "a string", &other)),
        }
    }

    fn bool(&mut self, key: &str) -> ApiResult<bool> {
        match self.take(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(self.wrong(key, "true or false", &other)),
        }
    }

    fn int(&mut self, key: &str) -> ApiResult<Option<i64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(other) => Err(self.wrong(key, "an integer", &other)),
        }
    }

    /// A list of strings; Docker's clients also send a lone string for `Cmd` and `Entrypoint`.
    fn strings(&mut self, key: &str) -> ApiResult<Option<Vec<String>>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s])),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(self.wrong(key, "a list of strings", &other)),
                })
                .collect::<ApiResult<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list of strings", &other)),
        }
    }

    /// Refuses any field left that is not at its zero value: weft does not do what it asks.
    fn finish(self) -> ApiResult<()> {
        let mut set: Vec<&String> = self.map.iter().filter(|(_, v)| !is_zero(v)).map(|(k, _)| k).collect();
        set.sort();
        match set.first() {
            None => Ok(()),
            Some(key) => Err(ApiError::bad(format!(
                "weft does not support {}.{key} (set to {}); leave it unset",
                self.section,
                self.map[key.as_str()]
            ))),
        }
    }
}

/// Null, false, 0, "", and lists or objects of nothing else: what Go's client sends for a field
/// the user did not set.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.iter().all(is_zero),
        Value::Object(map) => map.values().all(is_zero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> ApiResult<CreateRequest> {
        parse(body.to_string().as_bytes(), "")
    }

    #[test]
    fn what_docker_run_sends_is_mapped() {
        let body = json!({
            "Image": "busybox", "Cmd": ["echo", "hi"], "Env": ["A=1"], "Tty": false, "OpenStdin": false,
            "AttachStdout": true, "Labels": {}, "Volumes": {}, "Entrypoint": null, "User": "1000:1000",
            "StopSignal": "SIGUSR1", "StopTimeout": 3,
            "Healthcheck": {"Test": ["CMD", "wget", "-q", "http://x/a b"], "Interval": 2_000_000_000i64, "Retries": 2},
            "HostConfig": {
                "NetworkMode": "app", "AutoRemove": true, "Binds": ["/srv:/data:ro"],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "::1", "HostPort": "5353"}]},
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
                "Memory": 67108864, "NanoCpus": 500000000, "PidsLimit": -1, "CapAdd": ["NET_ADMIN"],
                "ConsoleSize": [24, 80], "MemorySwappiness": -1, "LogConfig": {"Type": "", "Config": {}}, "ShmSize": 0,
                "Dns": [], "OomKillDisable": false, "Tmpfs": {"/run": "size=1m"},
                "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "", "CgroupPermissions": "rwm"}]
            },
            "NetworkingConfig": {"EndpointsConfig": {"app": {"Aliases": ["svc"], "IPAMConfig": {"IPv4Address": "10.9.0.9"}, "NetworkID": ""}}}
        });
        let c = create(body).unwrap();
        let r = &c.run;
        assert!(c.auto_remove);
        assert_eq!((r.image.as_str(), r.network.as_str(), r.ip.as_str()), ("busybox", "app", "10.9.0.9"));
        assert_eq!(r.command, ["echo", "hi"]);
        assert!(!r.has_entrypoint);
        assert_eq!(r.publish, ["[::1]:5353:53/udp", "8080:80/tcp"]);
        assert_eq!(r.restart, "on-failure:3");
        assert_eq!((r.memory, r.cpus, r.pids_limit), (64 << 20, 0.5, 0));
        assert_eq!(r.aliases, ["svc"]);
        assert_eq!(r.health_cmd, "wget -q 'http://x/a b'");
        assert_eq!((r.health_interval.as_str(), r.health_retries), ("2000ms", 2));
        assert_eq!((r.stop_signal.as_str(), r.stop_grace), ("SIGUSR1", 3));
        assert_eq!(r.tmpfs, ["/run:size=1m"]);
        assert_eq!(r.devices, ["/dev/fuse:rwm"]);
    }

    #[test]
    fn fields_weft_cannot_honour_are_named() {
        let cases = [
            (json!({"Image": "b", "Domainname": "x"}), 400, "Config.Domainname"),
            (json!({"Image": "b", "Labels": {"a": 1}}), 400, "Config.Labels[\"a\"] must be a string"),
            (json!({"Image": "b", "Tty": true}), 501, "Config.Tty"),
            (json!({"Image": "b", "HostConfig": {"ShmSize": 1024}}), 400, "HostConfig.ShmSize"),
            (
                json!({"Image": "b", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}}),
                501,
                "picks",
            ),
            (json!({"Image": "b", "HostConfig": {"LogConfig": {"Type": "syslog"}}}), 501, "syslog"),
            (json!({"Image": "b", "Cmd": 5}), 400, "Config.Cmd must be a list of strings"),
            (json!({"Image": ""}), 400, "no image"),
            (
                json!({"Image": "b", "HostConfig": {"NetworkMode": "a"}, "NetworkingConfig": {"EndpointsConfig": {"b": {}}}}),
                400,
                "names network",
            ),
        ];
        for (body, status, text) in cases {
            let e = create(body.clone()).unwrap_err();
            assert_eq!(e.status, status, "{body}: {}", e.message);
            assert!(e.message.contains(text), "{body}: {}", e.message);
        }
        let e = parse(b"{not json", "").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("malformed JSON body"), "{}", e.message);
    }

    #[test]
    fn names_are_checked_as_docker_does() {
        assert_eq!(check_name("/web-1").unwrap(), "web-1");
        for bad in ["-x", "a", "a b", "x/y"] {
            assert!(check_name(bad).unwrap_err().message.starts_with("Invalid container name"), "{bad}");
        }
        assert_eq!(
            parse(br#"{"Image":"b","Entrypoint":[""]}"#, "n1").unwrap().run.entrypoint,
            Vec::<String>::new()
        );
    }
}
