//! The image config a build writes, typed with `oci-spec`'s image types.
//!
//! While a stage is built its runtime config is a [`RunConfig`]: OCI's [`Config`] (User,
//! ExposedPorts, Env, Entrypoint, Cmd, Volumes, WorkingDir, Labels, StopSignal) plus the two
//! Docker extensions Dockerfile instructions set and OCI lacks (Shell, Healthcheck), and, passed
//! through untouched, whatever else a base image's config held. Metadata instructions are applied
//! to it; at the end it becomes an [`ImageConfiguration`], serialized into the bytes
//! [`ImageStore::add_image`](crate::image::ImageStore::add_image) takes. Serialization goes
//! through a sorted JSON map so the same build always gives the same bytes (and image id).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use oci_spec::image::{Arch, Config, History, ImageConfiguration, Os, RootFs};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dockerfile::{Command, Instruction};
use crate::image::Digest;
use crate::{Result, RuntimeError};

/// Docker's `Healthcheck` (durations in nanoseconds, as Docker writes them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Healthcheck {
    /// The test: `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) test: Option<Vec<String>>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) interval: Option<i64>,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<i64>,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start_period: Option<i64>,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start_interval: Option<i64>,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retries: Option<i64>,
}

/// The runtime config (the `config` object of an image config) of a stage being built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunConfig {
    /// The fields OCI defines.
    #[serde(flatten)]
    pub(crate) oci: Config,
    /// Docker's `Shell`: the shell for shell-form commands.
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub(crate) shell: Option<Vec<String>>,
    /// Docker's `Healthcheck`.
    #[serde(rename = "Healthcheck", default, skip_serializing_if = "Option::is_none")]
    pub(crate) healthcheck: Option<Healthcheck>,
    /// Docker's `OnBuild`: triggers run when an image is built FROM this one.
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub(crate) on_build: Option<Vec<String>>,
    /// Anything else the base image's config held (`ArgsEscaped`, ...), kept as is.
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
    /// A CMD was given in this stage (an ENTRYPOINT then keeps it; it clears an inherited one).
    #[serde(skip)]
    pub(crate) cmd_set_here: bool,
}

fn bad_image(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::BadImage(format!("{what}: {e}"))
}

/// Adds `item` to an optional list unless it is there already.
fn add_unique(list: &Option<Vec<String>>, item: String) -> Option<Vec<String>> {
    let mut list = list.clone().unwrap_or_default();
    if !list.contains(&item) {
        list.push(item);
    }
    Some(list)
}

impl RunConfig {
    /// The runtime config of a base image (its image config's `config` object; anything that is
    /// not an object, such as a missing one, is an empty config).
    pub(crate) fn from_image(runtime_config: &Value) -> Result<RunConfig> {
        if !runtime_config.is_object() {
            return Ok(RunConfig::default());
        }
        serde_json::from_value(runtime_config.clone()).map_err(|e| bad_image("image runtime config", e))
    }

    /// `Env`, `KEY=value` entries.
    pub(crate) fn env(&self) -> &[String] {
        self.oci.env().as_deref().unwrap_or(&[])
    }

    /// `WorkingDir`, `/` when unset.
    pub(crate) fn working_dir(&self) -> &str {
        self.oci.working_dir().as_deref().unwrap_or("/")
    }

    /// `User`, empty when unset.
    pub(crate) fn user(&self) -> &str {
        self.oci.user().as_deref().unwrap_or("")
    }

    /// The argv of `cmd`: exec form as is, shell form through the stage's `Shell`
    /// (`/bin/sh -c` by default).
    pub(crate) fn argv(&self, cmd: &Command) -> Vec<String> {
        match cmd {
            Command::Exec(list) => list.clone(),
            Command::Shell(text) => {
                let mut argv = self.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                argv.push(text.clone());
                argv
            }
        }
    }

    /// Sets `key=value` in `Env`: in the place of an earlier value of `key`, else at the end.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        let mut env: Vec<String> = self.env().to_vec();
        let entry = format!("{key}={value}");
        match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
        self.oci.set_env(Some(env));
    }

    /// What a stage starts from: this config as the base left it, with Docker's default `PATH`
    /// in front when the base has none, its `OnBuild` triggers taken out (they run now, in the
    /// stage), and no CMD given in the stage yet. Returns the triggers.
    pub(crate) fn start_stage(&mut self) -> Vec<String> {
        if !self.env().iter().any(|e| e.split('=').next() == Some("PATH")) {
            let mut env = vec![format!("PATH={}", super::dockerfile::DEFAULT_PATH)];
            env.extend(self.env().iter().cloned());
            self.oci.set_env(Some(env));
        }
        self.cmd_set_here = false;
        self.on_build.take().unwrap_or_default()
    }

    /// Applies a metadata instruction (ENV, WORKDIR, CMD, ENTRYPOINT, EXPOSE, USER, LABEL,
    /// VOLUME, SHELL, STOPSIGNAL, HEALTHCHECK). ARG and the instructions that make layers do not
    /// change the config and are ignored.
    pub(crate) fn apply(&mut self, instruction: &Instruction) {
        match instruction {
            Instruction::Env(pairs) => {
                for (k, v) in pairs {
                    self.set_env(k, v);
                }
            }
            Instruction::Workdir(dir) => {
                let dir = if dir.starts_with('/') {
                    Path::new(dir).to_path_buf()
                } else {
                    Path::new(self.working_dir()).join(dir)
                };
                self.oci.set_working_dir(Some(clean(&dir)));
            }
            Instruction::Cmd(cmd) => {
                self.oci.set_cmd(Some(self.argv(cmd)));
                self.cmd_set_here = true;
            }
            Instruction::Entrypoint(cmd) => {
                self.oci.set_entrypoint(Some(self.argv(cmd)));
                // Docker: an ENTRYPOINT clears the CMD the base image had, not one of this stage.
                if !self.cmd_set_here {
                    self.oci.set_cmd(None);
                }
            }
            Instruction::OnBuild(trigger) => {
                self.on_build.get_or_insert_with(Vec::new).push(trigger.clone());
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    let port = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
                    self.oci.set_exposed_ports(add_unique(self.oci.exposed_ports(), port));
                }
            }
            Instruction::User(user) => {
                self.oci.set_user(Some(user.clone()));
            }
            Instruction::Label(pairs) => {
                let labels = self.oci.labels_mut().get_or_insert_with(HashMap::new);
                for (k, v) in pairs {
                    labels.insert(k.clone(), v.clone());
                }
            }
            Instruction::Volume(list) => {
                for v in list {
                    self.oci.set_volumes(add_unique(self.oci.volumes(), v.clone()));
                }
            }
            Instruction::Shell(list) => self.shell = Some(list.clone()),
            Instruction::StopSignal(sig) => {
                self.oci.set_stop_signal(Some(sig.clone()));
            }
            Instruction::Healthcheck(spec) => {
                self.healthcheck = Some(Healthcheck {
                    test: Some(spec.test.clone()),
                    interval: spec.interval,
                    timeout: spec.timeout,
                    start_period: spec.start_period,
                    start_interval: spec.start_interval,
                    retries: spec.retries,
                });
            }
            Instruction::Arg(..)
            | Instruction::Run(_)
            | Instruction::Copy { .. }
            | Instruction::Add { .. } => {}
        }
    }
}

/// `path` made absolute and lexically clean, as Go's `filepath.Clean` makes WORKDIR: no `.`,
/// no `..` (none above the root), no doubled or trailing slash.
pub(crate) fn clean(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let joined: Vec<String> = parts.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    format!("/{}", joined.join("/"))
}

/// The history of a base image: its image config's `history`, led by an entry without
/// details for each of its `layers` the history does not account for (an image imported without
/// history), so every layer has its entry, as OCI asks.
pub(crate) fn base_history(image_config: &Value, layers: usize) -> Result<Vec<History>> {
    let mut history: Vec<History> = match &image_config["history"] {
        Value::Null => Vec::new(),
        history => serde_json::from_value(history.clone()).map_err(|e| bad_image("image history", e))?,
    };
    let accounted = history.iter().filter(|h| !h.empty_layer().unwrap_or(false)).count();
    if accounted < layers {
        let missing = (0..layers - accounted).map(|_| History::default());
        history.splice(0..0, missing);
    }
    Ok(history)
}

/// The history entry of a build step, made at `created` (RFC 3339).
pub(crate) fn step_history(text: &str, made_layer: bool, created: &str) -> History {
    let mut entry = History::default();
    entry.set_created(Some(created.to_string()));
    entry.set_created_by(Some(text.to_string()));
    entry.set_empty_layer(Some(!made_layer));
    entry
}

/// `secs` since the epoch as RFC 3339 in UTC (`2026-12-02T09:31:00Z`), as image configs write
/// their times.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// What a finished build's image config is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageParts<'a> {
    /// The runtime config.
    pub(crate) config: &'a RunConfig,
    /// The layers, bottom first.
    pub(crate) diff_ids: &'a [Digest],
    /// One entry per step of every stage the image's layers came through.
    pub(crate) history: &'a [History],
    /// When the image was made (RFC 3339).
    pub(crate) created: &'a str,
}

impl ImageParts<'_> {
    /// The OCI image config (linux/amd64). Its `config` holds only what OCI defines; see
    /// [`ImageParts::to_json`] for the config the store gets.
    pub(crate) fn configuration(self) -> ImageConfiguration {
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(self.diff_ids.iter().map(Digest::to_string).collect());
        let mut image = ImageConfiguration::default();
        image
            .set_architecture(Arch::Amd64)
            .set_os(Os::Linux)
            .set_config(Some(self.config.oci.clone()))
            .set_rootfs(rootfs)
            .set_created(Some(self.created.to_string()))
            .set_history(Some(self.history.to_vec()));
        image
    }

    /// The image config as the store takes it: JSON with sorted keys, its `config` holding the
    /// Docker extensions and the base image's other keys beside OCI's.
    pub(crate) fn to_json(self) -> Result<Vec<u8>> {
        let mut value =
            serde_json::to_value(self.configuration()).map_err(|e| bad_image("image config", e))?;
        value["config"] = serde_json::to_value(self.config).map_err(|e| bad_image("image config", e))?;
        serde_json::to_vec(&value).map_err(|e| bad_image("image config", e))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::dockerfile::HealthcheckSpec;

    fn applied(instructions: &[Instruction]) -> RunConfig {
        let mut config = RunConfig::default();
        for i in instructions {
            config.apply(i);
        }
        config
    }

    #[test]
    fn metadata_instructions_land_under_dockers_keys() {
        let config = applied(&[
            Instruction::Env(vec![("PATH".into(), "/bin".into()), ("MODE".into(), "dev".into())]),
            Instruction::Env(vec![("MODE".into(), "prod".into())]),
            Instruction::Workdir("/srv".into()),
            Instruction::Workdir("app".into()),
            Instruction::User("1000:1000".into()),
            Instruction::Expose(vec!["8080".into(), "53/udp".into(), "8080".into()]),
            Instruction::Label(vec![("b".into(), "2".into()), ("a".into(), "1".into())]),
            Instruction::Volume(vec!["/data".into(), "/data".into(), "/logs".into()]),
            Instruction::Entrypoint(Command::Exec(vec!["/bin/app".into()])),
            Instruction::Cmd(Command::Shell("serve --port 8080".into())),
            Instruction::StopSignal("SIGINT".into()),
            Instruction::Arg("IGNORED".into(), Some("x".into())),
        ]);
        assert_eq!(config.working_dir(), "/srv/app");
        assert_eq!(config.user(), "1000:1000");
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(
            value,
            json!({
                "Env": ["PATH=/bin", "MODE=prod"],
                "WorkingDir": "/srv/app",
                "User": "1000:1000",
                "ExposedPorts": { "8080/tcp": {}, "53/udp": {} },
                "Labels": { "a": "1", "b": "2" },
                "Volumes": { "/data": {}, "/logs": {} },
                "Entrypoint": ["/bin/app"],
                "Cmd": ["/bin/sh", "-c", "serve --port 8080"],
                "StopSignal": "SIGINT",
            })
        );
    }

    #[test]
    fn shell_healthcheck_and_entrypoint_reset() {
        let mut config = RunConfig::from_image(&json!({ "Cmd": ["sh"], "Entrypoint": null })).unwrap();
        config.apply(&Instruction::Shell(vec!["/bin/bash".into(), "-ec".into()]));
        config.apply(&Instruction::Entrypoint(Command::Shell("exec app".into())));
        config.apply(&Instruction::Healthcheck(HealthcheckSpec {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(5_000_000_000),
            retries: Some(2),
            ..HealthcheckSpec::default()
        }));
        assert_eq!(config.argv(&Command::Shell("x".into())), ["/bin/bash", "-ec", "x"]);
        assert_eq!(config.argv(&Command::Exec(vec!["a".into()])), ["a"]);
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(value["Entrypoint"], json!(["/bin/bash", "-ec", "exec app"]));
        assert_eq!(value["Cmd"], Value::Null, "ENTRYPOINT clears the base image's Cmd");
        assert_eq!(value["Shell"], json!(["/bin/bash", "-ec"]));
        assert_eq!(
            value["Healthcheck"],
            json!({ "Test": ["CMD", "true"], "Interval": 5_000_000_000_i64, "Retries": 2 })
        );
        assert_eq!(RunConfig::default().argv(&Command::Shell("y".into())), ["/bin/sh", "-c", "y"]);
    }

    #[test]
    fn a_base_config_round_trips_with_keys_oci_does_not_know() {
        let base = json!({
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "",
            "ArgsEscaped": true,
            "OnBuild": null,
            "Healthcheck": { "Test": ["NONE"], "Interval": 30_000_000_000_i64, "Retries": 3 },
            "ExposedPorts": { "80/tcp": {} },
        });
        let config = RunConfig::from_image(&base).unwrap();
        assert_eq!(config.env(), ["PATH=/usr/bin"]);
        assert_eq!(config.working_dir(), "", "an empty WorkingDir stays empty");
        assert_eq!(config.other["ArgsEscaped"], json!(true));
        let mut without_null = base.clone();
        without_null.as_object_mut().unwrap().remove("OnBuild");
        assert_eq!(serde_json::to_value(&config).unwrap(), without_null, "a null OnBuild is left out");
        let triggers = RunConfig::from_image(&json!({ "OnBuild": ["COPY a /b"] })).unwrap();
        assert_eq!(triggers.on_build.as_deref(), Some(&["COPY a /b".to_string()][..]));
        assert_eq!(RunConfig::from_image(&Value::Null).unwrap(), RunConfig::default());
        assert!(RunConfig::from_image(&json!({ "Env": "not a list" })).is_err());
    }

    #[test]
    fn the_image_config_for_the_store() {
        let mut config = RunConfig::default();
        config.apply(&Instruction::Cmd(Command::Exec(vec!["/hello".into()])));
        config.apply(&Instruction::Shell(vec!["/bin/ash".into(), "-c".into()]));
        let base = json!({ "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "base" }] });
        let mut history = base_history(&base, 1).unwrap();
        let when = rfc3339(1_796_204_460);
        assert_eq!(when, "2026-12-02T09:41:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z", "a leap day");
        history.push(step_history("CMD [\"/hello\"]", false, &when));
        history.push(step_history("COPY hello /hello", true, &when));
        let diff: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let parts = ImageParts {
            config: &config,
            diff_ids: std::slice::from_ref(&diff),
            history: &history,
            created: &when,
        };

        let typed = parts.configuration();
        assert_eq!(typed.rootfs().diff_ids(), &[diff.to_string()]);
        assert_eq!(typed.config().as_ref().and_then(|c| c.cmd().clone()), Some(vec!["/hello".to_string()]));

        let bytes = parts.to_json().unwrap();
        assert_eq!(bytes, parts.to_json().unwrap(), "stable bytes, stable image id");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with(
                r#"{"architecture":"amd64","config":{"Cmd":["/hello"],"Shell":["/bin/ash","-c"]},"created":"2026-12-02T09:41:00Z","history":["#
            ),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["os"], "linux");
        assert_eq!(value["rootfs"], json!({ "type": "layers", "diff_ids": [diff.to_string()] }));
        assert_eq!(
            value["history"],
            json!([
                { "created": "2024-01-01T00:00:00Z", "created_by": "base" },
                { "created": "2026-12-02T09:41:00Z", "created_by": "CMD [\"/hello\"]", "empty_layer": true },
                { "created": "2026-12-02T09:41:00Z", "created_by": "COPY hello /hello", "empty_layer": false },
            ])
        );
        assert_eq!(base_history(&json!({}), 0).unwrap(), []);
        // An image imported without history: one bare entry per layer.
        let bare = base_history(&json!({}), 2).unwrap();
        assert_eq!(bare, [History::default(), History::default()]);
        // A history that accounts for fewer layers than the image has is led by bare entries.
        assert_eq!(base_history(&base, 2).unwrap().len(), 2);
    }
}
