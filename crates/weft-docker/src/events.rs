//! What runs in containers, seen from outside: `GET /events` (container events: create, start,
//! die, destroy, seen by looking at the host's containers every 200 ms and comparing), `GET
//! /containers/{id}/stats` (one sample, or one a second while the client reads) and `GET
//! /containers/{id}/top`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};
use weft_proto::v1 as pb;

use crate::engine::Engine;
use crate::error::{ApiError, ApiResult};
use crate::reply::{self, Reply};
use crate::route::Query;

/// How often events look at the containers.
const LOOK_EVERY: Duration = Duration::from_millis(200);

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// What a container looked like at one look.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    state: String,
    started_ns: u64,
    exit_code: i32,
    name: String,
    image: String,
}

/// The events between two looks, in Docker's shape. Pure.
fn changes(before: &BTreeMap<String, Seen>, after: &BTreeMap<String, Seen>, time: Duration) -> Vec<Value> {
    let event = |id: &str, seen: &Seen, action: &str, extra: Option<(&str, String)>| {
        let mut attributes = json!({"name": seen.name, "image": seen.image});
        if let Some((k, v)) = extra {
            attributes[k] = Value::from(v);
        }
        json!({
            "status": action, "id": id, "from": seen.image,
            "Type": "container", "Action": action,
            "Actor": {"ID": id, "Attributes": attributes},
            "scope": "local", "time": time.as_secs(), "timeNano": time.as_nanos() as u64,
        })
    };
    let mut out = Vec::new();
    for (id, now) in after {
        let was = before.get(id);
        if was.is_none() {
            out.push(event(id, now, "create", None));
        }
        let restarted = was.is_some_and(|w| w.started_ns != now.started_ns);
        let was_running = was.is_some_and(|w| w.state == "running") && !restarted;
        if let Some(w) = was.filter(|w| w.state == "running" && (now.state != "running" || restarted)) {
            // Exited, or exited and started again between two looks.
            let code = if restarted && now.state == "running" { w.exit_code } else { now.exit_code };
            out.push(event(id, now, "die", Some(("exitCode", code.to_string()))));
        }
        if now.state == "running" && !was_running {
            out.push(event(id, now, "start", None));
        }
    }
    for (id, was) in before {
        if !after.contains_key(id) {
            if was.state == "running" {
                out.push(event(id, was, "die", Some(("exitCode", was.exit_code.to_string()))));
            }
            out.push(event(id, was, "destroy", None));
        }
    }
    out
}

async fn look(engine: &Engine) -> ApiResult<BTreeMap<String, Seen>> {
    let list = engine.agent().list_containers(pb::ListContainersRequest { all: true }).await?.into_inner();
    Ok(list
        .containers
        .into_iter()
        .map(|c| {
            let seen = Seen {
                state: c.state,
                started_ns: c.started_ns,
                exit_code: c.exit_code,
                name: c.name,
                image: c.image,
            };
            (c.id, seen)
        })
        .collect())
}

/// Which events a client asked for (`filters`: type, container, event).
fn wanted(filters: &[(String, Vec<String>)], event: &Value) -> ApiResult<bool> {
    for (key, values) in filters {
        let id = event["id"].as_str().unwrap_or("");
        let name = event["Actor"]["Attributes"]["name"].as_str().unwrap_or("");
        let ok = match key.as_str() {
            "type" => values.iter().any(|v| v == "container"),
            "event" => values.iter().any(|v| event["Action"] == v.as_str()),
            "container" => values.iter().any(|v| v == name || (v.len() >= 3 && id.starts_with(v.as_str()))),
            other => return Err(ApiError::bad(format!("weft does not support the event filter {other:?}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `GET /events`: from now on, until the client goes (`since` and `until` are refused: weft keeps
/// no event history).
pub async fn events(engine: &Arc<Engine>, query: &Query) -> ApiResult<Reply> {
    for key in ["since", "until"] {
        if query.get(key).is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::unsupported(format!("events --{key}: weft keeps no event history")));
        }
    }
    let filters = query.filters()?;
    wanted(&filters, &json!({}))?;
    let mut before = look(engine).await?;
    let (reply, tx) = reply::stream("application/json");
    let engine = engine.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let after = match look(&engine).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "docker API: events could not list the containers");
                    continue;
                }
            };
            for event in changes(&before, &after, now()) {
                if wanted(&filters, &event).unwrap_or(false)
                    && tx.send(Bytes::from(format!("{event}\n"))).await.is_err()
                {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            before = after;
        }
    });
    Ok(reply)
}

/// The machine's CPU time in nanoseconds, as Docker's `system_cpu_usage` (from /proc/stat).
fn system_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let jiffies: u64 = text
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    jiffies * 10_000_000
}

fn sample(s: &pb::StatsResponse, at: Duration) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = if s.memory_limit == 0 || s.memory_limit >= 1 << 62 {
        crate::system::mem_total()
    } else {
        s.memory_limit
    };
    json!({
        "read": crate::model::rfc3339(at.as_nanos() as u64),
        "cpu_stats": {
            "cpu_usage": {"total_usage": s.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system_cpu_ns(),
            "online_cpus": cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "memory_stats": {"usage": s.memory_bytes, "limit": limit, "stats": {}},
        "pids_stats": {"current": s.pids},
    })
}

/// `GET /containers/{id}/stats?stream=0|1`: Docker's shape, CPU as the container's and the
/// machine's CPU time so clients compute the percentage between two samples.
pub async fn stats(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    let info = engine.inspect(reference).await?.ok_or_else(|| ApiError::no_such_container(reference))?;
    let (id, name) = (info.id, format!("/{}", info.name));
    let stream = query.flag("stream", true);
    let one_shot = query.flag("one-shot", false);
    let take = |engine: Arc<Engine>, id: String| async move {
        let s = engine.agent().stats(pb::ContainerRef { reference: id }).await?.into_inner();
        Ok::<_, ApiError>(sample(&s, now()))
    };
    let first = take(engine.clone(), id.clone()).await?;
    let (reply, tx) = reply::stream("application/json");
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut previous = first;
        if !one_shot {
            tokio::time::sleep(Duration::from_millis(if stream { 1000 } else { 500 })).await;
        }
        loop {
            let Ok(mut current) = take(engine.clone(), id.clone()).await else { return };
            current["preread"] = previous["read"].clone();
            current["precpu_stats"] = previous["cpu_stats"].clone();
            current["id"] = Value::from(id.clone());
            current["name"] = Value::from(name.clone());
            if tx.send(Bytes::from(format!("{current}\n"))).await.is_err() || !stream {
                return;
            }
            previous = current;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(reply)
}

/// One process of a container as `docker top` shows it (`ps -ef` columns).
fn process_row(pid: u32) -> Option<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut cmd = cmdline
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if cmd.is_empty() {
        cmd = format!("[{}]", field("Name:").unwrap_or_default());
    }
    Some(vec![
        field("Uid:").unwrap_or_default(),
        pid.to_string(),
        field("PPid:").unwrap_or_default(),
        "0".into(),
        String::new(),
        "?".into(),
        "00:00:00".into(),
        cmd,
    ])
}

/// `GET /containers/{id}/top`: the processes in the container's PID namespace, read from the
/// host's /proc (weftd runs on the container's host), in `ps -ef`'s columns.
pub async fn top(engine: &Arc<Engine>, reference: &str, query: &Query) -> ApiResult<Reply> {
    if query.get("ps_args").is_some_and(|a| !a.is_empty() && a != "-ef") {
        return Err(ApiError::unsupported("top with ps arguments other than -ef"));
    }
    let info = engine.inspect(reference).await?.ok_or_else(|| ApiError::no_such_container(reference))?;
    if info.state != "running" || info.pid == 0 {
        return Err(ApiError::conflict(format!("Container {} is not running", info.id)));
    }
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let mine = ns(&info.pid.to_string())
        .ok_or_else(|| ApiError::internal("the container's PID namespace is gone"))?;
    let mut rows = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(|e| ApiError::internal(format!("/proc: {e}")))?.flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else { continue };
        if ns(&name).as_ref() == Some(&mine)
            && let Some(row) = process_row(pid)
        {
            rows.push(row);
        }
    }
    let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
    Ok(reply::json(http::StatusCode::OK, &json!({"Titles": titles, "Processes": rows})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: &str, started: u64, code: i32) -> Seen {
        Seen {
            state: state.into(),
            started_ns: started,
            exit_code: code,
            name: "web".into(),
            image: "busybox".into(),
        }
    }

    fn actions(before: &[(&str, Seen)], after: &[(&str, Seen)]) -> Vec<String> {
        let map = |l: &[(&str, Seen)]| l.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        changes(&map(before), &map(after), Duration::from_secs(1))
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["Action"].as_str().unwrap(),
                    e["Actor"]["Attributes"]["exitCode"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn looks_compared_give_dockers_events() {
        assert_eq!(actions(&[], &[("a", seen("running", 1, 0))]), ["create:", "start:"]);
        assert_eq!(actions(&[("a", seen("running", 1, 0))], &[("a", seen("exited", 1, 3))]), ["die:3"]);
        assert_eq!(
            actions(&[("a", seen("running", 1, 0))], &[("a", seen("running", 1, 0))]),
            Vec::<String>::new()
        );
        assert_eq!(
            actions(&[("a", seen("running", 1, 0))], &[("a", seen("running", 2, 0))]),
            ["die:0", "start:"]
        );
        assert_eq!(actions(&[("a", seen("running", 1, 0))], &[]), ["die:0", "destroy:"]);
        assert_eq!(actions(&[("a", seen("exited", 1, 0))], &[("a", seen("running", 2, 0))]), ["start:"]);
    }

    #[test]
    fn filters() {
        let e = json!({"id": "abcdef", "Action": "die", "Actor": {"Attributes": {"name": "web"}}});
        let f = |j: &str| wanted(&Query::parse(Some(&format!("filters={j}"))).filters().unwrap(), &e);
        assert!(f(r#"{"type":["container"],"event":{"die":true},"container":["web"]}"#).unwrap());
        assert!(!f(r#"{"event":["start"]}"#).unwrap());
        assert!(f(r#"{"image":["x"]}"#).is_err());
    }
}
