//! The network endpoints: list, inspect, create, rm, connect, disconnect. `overlay` networks
//! span every host of the cluster; `bridge` ones are, as in weft, per host.

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;
use tonic::Code;
use weft_proto::v1 as pb;

use crate::engine::Engine;
use crate::error::{ApiError, ApiResult};
use crate::model;
use crate::reply::{self, Reply};
use crate::route::Query;

/// The network `reference` names (a name, an id or an id prefix), Docker's 404 otherwise.
async fn resolve(engine: &Engine, reference: &str) -> ApiResult<pb::NetworkInfo> {
    let mut agent = engine.agent();
    match agent.inspect_network(pb::NetworkRef { name: reference.into() }).await {
        Ok(r) => return Ok(r.into_inner()),
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    let all = agent.list_networks(pb::Empty {}).await?.into_inner().networks;
    all.into_iter()
        .find(|n| {
            n.network
                .as_ref()
                .is_some_and(|net| reference.len() >= 3 && model::network_id(net).starts_with(reference))
        })
        .ok_or_else(|| ApiError::not_found(format!("network {reference} not found")))
}

/// `GET /networks`.
pub async fn list(engine: &Arc<Engine>, query: &Query) -> ApiResult<Reply> {
    let filters = query.filters()?;
    let mut names: Option<Vec<String>> = None;
    for (key, wanted) in filters {
        match key.as_str() {
            "name" => names = Some(wanted),
            other => return Err(ApiError::bad(format!("weft does not support the filter {other:?}"))),
        }
    }
    let networks = engine.agent().list_networks(pb::Empty {}).await?.into_inner().networks;
    let rows: Vec<Value> = networks
        .iter()
        .filter(|n| {
            let name = n.network.as_ref().map(|x| x.name.as_str()).unwrap_or("");
            names.as_ref().is_none_or(|w| w.iter().any(|w| name.contains(w.as_str())))
        })
        .map(model::network)
        .collect();
    Ok(reply::json(StatusCode::OK, &rows))
}

/// `GET /networks/{id}`.
pub async fn inspect(engine: &Arc<Engine>, reference: &str) -> ApiResult<Reply> {
    Ok(reply::json(StatusCode::OK, &model::network(&resolve(engine, reference).await?)))
}

/// Docker's create body as weft's request.
fn create_request(body: &[u8]) -> ApiResult<pb::CreateNetworkRequest> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad("malformed JSON body: expected an object"));
    };
    let mut take = |k: &str| map.remove(k).filter(|v| !v.is_null());
    let name = take("Name").and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad("network name is required"));
    }
    let driver = match take("Driver").as_ref().and_then(Value::as_str).unwrap_or("") {
        "" | "bridge" => pb::NetworkDriver::Bridge,
        "overlay" => pb::NetworkDriver::Overlay,
        other => return Err(ApiError::not_found(format!("plugin \"{other}\" not found"))),
    };
    let internal = take("Internal").and_then(|v| v.as_bool()).unwrap_or(false);
    let enable_ipv6 = take("EnableIPv6").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut subnets = Vec::new();
    if let Some(ipam) = take("IPAM") {
        let driver = ipam.get("Driver").and_then(Value::as_str).unwrap_or("");
        if !matches!(driver, "" | "default") {
            return Err(ApiError::unsupported(format!("the IPAM driver {driver:?}")));
        }
        if ipam.get("Options").is_some_and(|o| o.as_object().is_some_and(|m| !m.is_empty())) {
            return Err(ApiError::unsupported("IPAM options"));
        }
        for config in ipam.get("Config").and_then(Value::as_array).into_iter().flatten() {
            for key in ["IPRange", "Gateway"] {
                if config.get(key).and_then(Value::as_str).is_some_and(|v| !v.is_empty()) {
                    return Err(ApiError::unsupported(format!(
                        "IPAM.Config.{key}: weft gives each host a block of the subnet, with its own gateway"
                    )));
                }
            }
            if config.get("AuxiliaryAddresses").is_some_and(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            {
                return Err(ApiError::unsupported("IPAM.Config.AuxiliaryAddresses"));
            }
            if let Some(subnet) = config.get("Subnet").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                subnets.push(subnet.to_string());
            }
        }
    }
    if enable_ipv6 && !subnets.iter().any(|s| s.contains(':')) {
        return Err(ApiError::bad("EnableIPv6 needs an IPv6 subnet in IPAM.Config (--subnet fd00:...::/64)"));
    }
    let labels = match take("Labels") {
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(key, v)| pb::Label { key, value: v.as_str().unwrap_or_default().to_string() })
            .collect(),
        _ => Vec::new(),
    };
    if take("Options").is_some_and(|o| o.as_object().is_some_and(|m| !m.is_empty())) {
        return Err(ApiError::unsupported("driver options (docker network create -o)"));
    }
    for harmless in ["CheckDuplicate", "Attachable", "Scope", "ConfigFrom"] {
        take(harmless);
    }
    for refused in ["Ingress", "ConfigOnly"] {
        if take(refused).and_then(|v| v.as_bool()).unwrap_or(false) {
            return Err(ApiError::unsupported(format!("{refused} networks")));
        }
    }
    if let Some((key, _)) = map.iter().find(|(_, v)| !v.is_null()) {
        return Err(ApiError::bad(format!("weft does not support {key} in a network create")));
    }
    Ok(pb::CreateNetworkRequest { name, driver: driver as i32, subnets, internal, labels })
}

/// `POST /networks/create`.
pub async fn create(engine: &Arc<Engine>, body: &[u8]) -> ApiResult<Reply> {
    let request = create_request(body)?;
    let name = request.name.clone();
    match engine.agent().create_network(request).await {
        Ok(r) => {
            let id = r.into_inner().network.map(|n| model::network_id(&n)).unwrap_or_default();
            Ok(reply::json(StatusCode::CREATED, &serde_json::json!({"Id": id, "Warning": ""})))
        }
        Err(s) if s.code() == Code::AlreadyExists => {
            Err(ApiError::conflict(format!("network with name {name} already exists")))
        }
        Err(s) => Err(s.into()),
    }
}

/// `DELETE /networks/{id}`.
pub async fn remove(engine: &Arc<Engine>, reference: &str) -> ApiResult<Reply> {
    let info = resolve(engine, reference).await?;
    let name = info.network.map(|n| n.name).unwrap_or_default();
    engine.agent().remove_network(pb::NetworkRef { name }).await?;
    Ok(reply::empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/{id}/connect` and `/disconnect`.
pub async fn connect(engine: &Arc<Engine>, reference: &str, body: &[u8], connect: bool) -> ApiResult<Reply> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON body: {e}")))?;
    let container = value.get("Container").and_then(Value::as_str).unwrap_or("").to_string();
    if container.is_empty() {
        return Err(ApiError::bad("no container given: Container is empty"));
    }
    let config = value.get("EndpointConfig");
    let aliases = config
        .and_then(|c| c.get("Aliases"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let ip = config
        .and_then(|c| c.get("IPAMConfig"))
        .and_then(|i| i.get("IPv4Address"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let info = resolve(engine, reference).await?;
    let network = info.network.map(|n| n.name).unwrap_or_default();
    let request = pb::ConnectRequest { network, container, aliases, ip };
    if let Some(id) = engine.find_created(&request.container) {
        return connect_created(engine, &id, request, connect);
    }
    let mut agent = engine.agent();
    if connect {
        agent.connect_network(request).await?;
    } else {
        agent.disconnect_network(request).await?;
    }
    Ok(reply::empty(StatusCode::OK))
}

/// Connects or disconnects a container created and not started: its run request (or the
/// networks it joins right after start) changes, as Docker's endpoint settings of a created
/// container do.
fn connect_created(
    engine: &Engine,
    id: &str,
    request: pb::ConnectRequest,
    connect: bool,
) -> ApiResult<Reply> {
    engine.with_created(|c| {
        let entry = c.get_mut(id).ok_or_else(|| ApiError::no_such_container(id))?;
        let run = &mut entry.request.run;
        let primary = if run.network.is_empty() { "bridge" } else { run.network.as_str() };
        let on_primary = primary == request.network;
        match (connect, on_primary) {
            (true, true) => {
                for alias in request.aliases {
                    if !run.aliases.contains(&alias) {
                        run.aliases.push(alias);
                    }
                }
                if !request.ip.is_empty() {
                    run.ip = request.ip;
                }
            }
            (true, false) => {
                entry.more_networks.retain(|n| n.network != request.network);
                entry.more_networks.push(request);
            }
            (false, false) => entry.more_networks.retain(|n| n.network != request.network),
            (false, true) => {
                return Err(ApiError::unsupported(format!(
                    "disconnecting a created container from the network it will run on ({primary}): create it on another"
                )));
            }
        }
        Ok(reply::empty(StatusCode::OK))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_docker_network_create_sends_is_mapped() {
        let body = br#"{"Name":"app","Driver":"overlay","IPAM":{"Driver":"default","Config":[{"Subnet":"10.9.0.0/16"},{"Subnet":"fd00:9::/64"}],"Options":{}},"Internal":true,"Attachable":false,"EnableIPv6":true,"Options":{},"Labels":{"team":"a"},"CheckDuplicate":true}"#;
        let r = create_request(body).unwrap();
        assert_eq!((r.name.as_str(), r.driver, r.internal), ("app", pb::NetworkDriver::Overlay as i32, true));
        assert_eq!(r.subnets, ["10.9.0.0/16", "fd00:9::/64"]);
        assert_eq!(r.labels[0].value, "a");
    }

    #[test]
    fn what_weft_cannot_do_is_named() {
        for (body, status, text) in [
            (r#"{"Name":"a","Driver":"macvlan"}"#, 404, "plugin \"macvlan\" not found"),
            (
                r#"{"Name":"a","IPAM":{"Config":[{"Subnet":"10.0.0.0/24","Gateway":"10.0.0.1"}]}}"#,
                501,
                "Gateway",
            ),
            (r#"{"Name":"a","Options":{"mtu":"1400"}}"#, 501, "driver options"),
            (r#"{"Name":"a","EnableIPv6":true}"#, 400, "IPv6 subnet"),
            (r#"{"Driver":"bridge"}"#, 400, "name is required"),
            (r#"{"Name":"a","Frobnicate":1}"#, 400, "Frobnicate"),
        ] {
            let e = create_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, status, "{body}: {}", e.message);
            assert!(e.message.contains(text), "{body}: {}", e.message);
        }
    }
}
