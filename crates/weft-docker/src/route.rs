//! Which endpoint a request is for: the `/v1.xx/` prefix (or none), the method and the path,
//! and the query string. Pure, so every path the clients send is tested without a socket.

use std::collections::BTreeMap;

use http::Method;

use crate::error::{ApiError, ApiResult};

/// The newest API version weft speaks (Docker Engine 25).
pub const MAX_VERSION: (u32, u32) = (1, 44);

/// The oldest API version weft accepts.
pub const MIN_VERSION: (u32, u32) = (1, 24);

/// Renders a version as Docker does (`1.44`).
pub fn version_text(v: (u32, u32)) -> String {
    format!("{}.{}", v.0, v.1)
}

/// An endpoint of the Engine API, with the object it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET|HEAD /_ping`.
    Ping,
    /// `GET /version`.
    Version,
    /// `GET /info`.
    Info,
    /// `GET /containers/json`.
    ContainerList,
    /// `POST /containers/create`.
    ContainerCreate,
    /// `GET /containers/{id}/json`.
    ContainerInspect(String),
    /// `POST /containers/{id}/start`.
    ContainerStart(String),
    /// `POST /containers/{id}/stop`.
    ContainerStop(String),
    /// `POST /containers/{id}/restart`.
    ContainerRestart(String),
    /// `POST /containers/{id}/kill`.
    ContainerKill(String),
    /// `POST /containers/{id}/wait`.
    ContainerWait(String),
    /// `POST /containers/{id}/attach`.
    ContainerAttach(String),
    /// `GET /containers/{id}/logs`.
    ContainerLogs(String),
    /// `DELETE /containers/{id}`.
    ContainerDelete(String),
    /// `GET /containers/{id}/stats`.
    ContainerStats(String),
    /// `GET /events`.
    Events,
    /// `GET /containers/{id}/top`.
    ContainerTop(String),
    /// `POST /containers/{id}/exec`.
    ExecCreate(String),
    /// `POST /exec/{id}/start`.
    ExecStart(String),
    /// `POST /exec/{id}/resize`.
    ExecResize(String),
    /// `GET /exec/{id}/json`.
    ExecInspect(String),
    /// `POST /build` (the classic builder).
    Build,
    /// `GET /images/json`.
    ImageList,
    /// `POST /images/create` (pull).
    ImagePull,
    /// `POST /images/load` (a docker-save tar in the body).
    ImageLoad,
    /// `GET /images/get?names=NAME` and `GET /images/{name}/get`: a docker-save tar.
    ImageSave(Option<String>),
    /// `POST /images/{name}/tag?repo=R&tag=T`.
    ImageTag(String),
    /// `DELETE /images/{name}`.
    ImageDelete(String),
    /// `GET /images/{name}/json` (names may hold slashes).
    ImageInspect(String),
    /// `GET /networks`.
    NetworkList,
    /// `POST /networks/create`.
    NetworkCreate,
    /// `GET /networks/{id}`.
    NetworkInspect(String),
    /// `DELETE /networks/{id}`.
    NetworkDelete(String),
    /// `POST /networks/{id}/connect`.
    NetworkConnect(String),
    /// `POST /networks/{id}/disconnect`.
    NetworkDisconnect(String),
}

/// A request's endpoint and the API version it asked for (`None`: unversioned, the newest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The version of the `/v1.xx/` prefix.
    pub version: Option<(u32, u32)>,
    /// The endpoint.
    pub route: Route,
}

/// Finds the endpoint for `method` and `path`. Unknown paths get Docker's 404 `page not found`;
/// a version outside [`MIN_VERSION`]..=[`MAX_VERSION`] gets Docker's 400 wording.
pub fn route(method: &Method, path: &str) -> ApiResult<Routed> {
    let (version, rest) = split_version(path)?;
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let m = method;
    let one = |s: &str| percent_decode(s);
    let route = match (m, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Route::Ping,
        (&Method::GET, ["version"]) => Route::Version,
        (&Method::GET, ["info"]) => Route::Info,
        (&Method::GET, ["containers", "json"]) => Route::ContainerList,
        (&Method::POST, ["containers", "create"]) => Route::ContainerCreate,
        (&Method::GET, ["containers", id, "json"]) => Route::ContainerInspect(one(id)),
        (&Method::POST, ["containers", id, "start"]) => Route::ContainerStart(one(id)),
        (&Method::POST, ["containers", id, "stop"]) => Route::ContainerStop(one(id)),
        (&Method::POST, ["containers", id, "restart"]) => Route::ContainerRestart(one(id)),
        (&Method::POST, ["containers", id, "kill"]) => Route::ContainerKill(one(id)),
        (&Method::POST, ["containers", id, "wait"]) => Route::ContainerWait(one(id)),
        (&Method::POST, ["containers", id, "attach"]) => Route::ContainerAttach(one(id)),
        (&Method::GET, ["containers", id, "logs"]) => Route::ContainerLogs(one(id)),
        (&Method::DELETE, ["containers", id]) => Route::ContainerDelete(one(id)),
        (&Method::GET, ["containers", id, "stats"]) => Route::ContainerStats(one(id)),
        (&Method::GET, ["events"]) => Route::Events,
        (&Method::GET, ["containers", id, "top"]) => Route::ContainerTop(one(id)),
        (&Method::POST, ["containers", id, "exec"]) => Route::ExecCreate(one(id)),
        (&Method::POST, ["exec", id, "start"]) => Route::ExecStart(one(id)),
        (&Method::POST, ["exec", id, "resize"]) => Route::ExecResize(one(id)),
        (&Method::GET, ["exec", id, "json"]) => Route::ExecInspect(one(id)),
        (&Method::POST, ["build"]) => Route::Build,
        (&Method::GET, ["images", "json"]) => Route::ImageList,
        (&Method::POST, ["images", "create"]) => Route::ImagePull,
        (&Method::POST, ["images", "load"]) => Route::ImageLoad,
        (&Method::GET, ["images", "get"]) => Route::ImageSave(None),
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            Route::ImageSave(Some(percent_decode(&name.join("/"))))
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            Route::ImageTag(percent_decode(&name.join("/")))
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            Route::ImageDelete(percent_decode(&name.join("/")))
        }
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            Route::ImageInspect(percent_decode(&name.join("/")))
        }
        (&Method::GET, ["networks"]) => Route::NetworkList,
        (&Method::POST, ["networks", "create"]) => Route::NetworkCreate,
        (&Method::GET, ["networks", id]) => Route::NetworkInspect(one(id)),
        (&Method::DELETE, ["networks", id]) => Route::NetworkDelete(one(id)),
        (&Method::POST, ["networks", id, "connect"]) => Route::NetworkConnect(one(id)),
        (&Method::POST, ["networks", id, "disconnect"]) => Route::NetworkDisconnect(one(id)),
        _ => return Err(unknown(method, rest)),
    };
    Ok(Routed { version, route })
}

/// An endpoint weft does not serve: moby's own 404 text for unknown paths, and a 501 naming
/// the endpoint for the parts of the API weft leaves out on purpose.
fn unknown(method: &Method, rest: &str) -> ApiError {
    let first = rest.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "swarm" | "services" | "nodes" | "tasks" | "secrets" | "configs" | "plugins" | "volumes"
        | "session" | "grpc" | "distribution" | "commit" | "auth" | "system" | "events" | "exec"
        | "build" => ApiError::unsupported(format!("{method} {rest} (see the README's Docker API section)")),
        "containers" | "images" | "networks" => {
            ApiError::unsupported(format!("{method} {rest} (see the README's Docker API section)"))
        }
        _ => ApiError::not_found("page not found"),
    }
}

/// Splits `/v1.44/containers/json` into `(Some((1, 44)), "/containers/json")`.
fn split_version(path: &str) -> ApiResult<(Option<(u32, u32)>, &str)> {
    let Some(rest) = path.strip_prefix("/v") else { return Ok((None, path)) };
    let (text, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((major, minor)) = text.split_once('.') else { return Ok((None, path)) };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Ok((None, path));
    };
    let v = (major, minor);
    if v > MAX_VERSION {
        return Err(ApiError::bad(format!(
            "client version {text} is too new. Maximum supported API version is {}",
            version_text(MAX_VERSION)
        )));
    }
    if v < MIN_VERSION {
        return Err(ApiError::bad(format!(
            "client version {text} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
            version_text(MIN_VERSION)
        )));
    }
    Ok((Some(v), tail))
}

/// A request's query string, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(BTreeMap<String, String>, Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=x%20y`.
    pub fn parse(text: Option<&str>) -> Query {
        let mut map = BTreeMap::new();
        let mut pairs = Vec::new();
        for pair in text.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
            pairs.push((percent_decode(k), percent_decode(v)));
        }
        Query(map, pairs)
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every key and value, in the order given.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.1.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every value given for `key` (`names=a&names=b`).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.1.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// The `filters` parameter: each key with its wanted values, in either of Docker's shapes
    /// (`{"name":{"web":true}}` or the older `{"name":["web"]}`).
    pub fn filters(&self) -> ApiResult<Vec<(String, Vec<String>)>> {
        let text = match self.get("filters") {
            None | Some("") => return Ok(Vec::new()),
            Some(t) => t,
        };
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| ApiError::bad(format!("invalid filters: {e}")))?;
        map.into_iter()
            .map(|(key, values)| {
                let wanted = match values {
                    serde_json::Value::Object(m) => m.keys().cloned().collect(),
                    serde_json::Value::Array(a) => {
                        a.iter().filter_map(|v| v.as_str().map(String::from)).collect()
                    }
                    _ => return Err(ApiError::bad(format!("invalid filter {key:?}"))),
                };
                Ok((key, wanted))
            })
            .collect()
    }

    /// A boolean as Docker reads one: absent is `default`; empty, `0`, `no`, `false`, `none` are
    /// false; anything else is true.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "no" | "false" | "none"),
        }
    }

    /// A number, or a 400 naming the parameter.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => {
                v.parse().map(Some).map_err(|_| ApiError::bad(format!("invalid value for {key}: {v:?}")))
            }
        }
    }
}

/// Decodes `%XX` escapes and `+` (as spaces, the form encoding Go's client uses).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: Method, path: &str) -> ApiResult<Routed> {
        route(&method, path)
    }

    #[test]
    fn paths_the_docker_client_sends_are_routed() {
        assert_eq!(r(Method::HEAD, "/_ping").unwrap(), Routed { version: None, route: Route::Ping });
        assert_eq!(
            r(Method::POST, "/v1.44/containers/abc/attach").unwrap(),
            Routed { version: Some((1, 44)), route: Route::ContainerAttach("abc".into()) }
        );
        assert_eq!(
            r(Method::GET, "/v1.41/images/localhost:5000/team/app:1/json").unwrap().route,
            Route::ImageInspect("localhost:5000/team/app:1".into())
        );
        assert_eq!(r(Method::DELETE, "/containers/web").unwrap().route, Route::ContainerDelete("web".into()));
        assert_eq!(r(Method::GET, "/networks/app").unwrap().route, Route::NetworkInspect("app".into()));
        assert_eq!(
            r(Method::DELETE, "/v1.41/images/team/app:1").unwrap().route,
            Route::ImageDelete("team/app:1".into())
        );
        assert_eq!(r(Method::POST, "/images/busybox/tag").unwrap().route, Route::ImageTag("busybox".into()));
        assert_eq!(r(Method::GET, "/images/get").unwrap().route, Route::ImageSave(None));
    }

    #[test]
    fn versions_out_of_range_and_unknown_paths_are_refused_as_docker_does() {
        let e = r(Method::GET, "/v1.50/version").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "client version 1.50 is too new. Maximum supported API version is 1.44");
        assert_eq!(r(Method::GET, "/v1.12/version").unwrap_err().status, 400);
        assert_eq!(r(Method::GET, "/nothing").unwrap_err().message, "page not found");
        let swarm = r(Method::GET, "/v1.44/swarm").unwrap_err();
        assert_eq!(swarm.status, 501);
        assert!(swarm.message.contains("GET /swarm"), "{}", swarm.message);
    }

    #[test]
    fn queries_decode_escapes() {
        let q = Query::parse(Some("filters=%7B%22a%22%3A1%7D&all=1&tail=all&x&names=a&names=b%2Fc"));
        assert_eq!(q.all("names"), ["a", "b/c"]);
        assert!(q.filters().unwrap_err().message.contains("invalid filter \"a\""));
        assert!(Query::parse(None).filters().unwrap().is_empty());
        let f = Query::parse(Some(
            "filters=%7B%22name%22%3A%7B%22web%22%3Atrue%7D%2C%22id%22%3A%5B%22ab%22%5D%7D",
        ));
        assert_eq!(
            f.filters().unwrap(),
            [("id".to_string(), vec!["ab".to_string()]), ("name".to_string(), vec!["web".to_string()])]
        );
        assert_eq!(q.get("filters"), Some(r#"{"a":1}"#));
        assert!(q.flag("all", false) && !q.flag("x", true) && !q.flag("y", false) && q.flag("y", true));
        assert!(q.number::<u32>("tail").is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
