//! Routes, including `onlink` and default routes.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use crate::error::errno_of;
use crate::{Cidr, NetError, Netlink, Result};

const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A route to add, ensure or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network (no host bits); `0.0.0.0/0` for a default route.
    pub dst: Cidr,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub dev: Option<u32>,
    /// Treat the gateway as directly reachable on `dev` even without a matching connected route
    /// (how weft routes a remote block through its vxlan device).
    pub onlink: bool,
    /// Metric (priority).
    pub metric: Option<u32>,
    /// Routing table; the main table when `None`.
    pub table: Option<u32>,
}

impl RouteSpec {
    /// A route to `dst` via `gateway`.
    pub fn via(dst: Cidr, gateway: IpAddr) -> RouteSpec {
        RouteSpec { dst, gateway: Some(gateway), dev: None, onlink: false, metric: None, table: None }
    }

    /// A route to `dst` straight out of `dev`.
    pub fn dev(dst: Cidr, dev: u32) -> RouteSpec {
        RouteSpec { dst, gateway: None, dev: Some(dev), onlink: false, metric: None, table: None }
    }

    /// A default route via `gateway`.
    pub fn default_via(gateway: IpAddr) -> RouteSpec {
        let any = if gateway.is_ipv4() { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u8; 16]) };
        RouteSpec::via(Cidr::new(any, 0).expect("/0 fits every family"), gateway)
    }

    /// Sets the output device.
    pub fn with_dev(mut self, dev: u32) -> RouteSpec {
        self.dev = Some(dev);
        self
    }

    /// Sets `onlink`.
    pub fn with_onlink(mut self) -> RouteSpec {
        self.onlink = true;
        self
    }

    fn validate(&self) -> Result<()> {
        if !self.dst.is_network() {
            return Err(NetError::invalid(
                "route destination",
                self.dst,
                format!("host bits set; the network is {}", self.dst.network()),
            ));
        }
        if self.gateway.is_none() && self.dev.is_none() {
            return Err(NetError::invalid("route", self.dst, "needs a gateway or a device"));
        }
        if let Some(gw) = self.gateway
            && gw.is_ipv4() != self.dst.addr().is_ipv4()
        {
            return Err(NetError::invalid(
                "route gateway",
                gw,
                format!("not of the same family as {}", self.dst),
            ));
        }
        if self.onlink && (self.gateway.is_none() || self.dev.is_none()) {
            return Err(NetError::invalid("route", self.dst, "onlink needs both a gateway and a device"));
        }
        Ok(())
    }

    fn table(&self) -> u32 {
        self.table.unwrap_or(MAIN_TABLE)
    }

    fn message(&self) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.dst.addr(), self.dst.prefix_len())
            .expect("validated destination");
        if let Some(gw) = self.gateway {
            builder = builder.gateway(gw).expect("validated gateway");
        }
        if let Some(dev) = self.dev {
            builder = builder.output_interface(dev);
        }
        if self.onlink {
            builder = builder.onlink();
        }
        if let Some(metric) = self.metric {
            builder = builder.priority(metric);
        }
        builder = builder.table_id(self.table()).protocol(RouteProtocol::Static);
        let scope = if self.gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        builder.scope(scope).kind(RouteType::Unicast).build()
    }
}

/// A unicast route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: Cidr,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub dev: Option<u32>,
    /// The onlink flag.
    pub onlink: bool,
    /// Metric.
    pub metric: u32,
    /// Routing table.
    pub table: u32,
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn from_message(msg: &RouteMessage) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let v4 = msg.header.address_family == netlink_packet_route::AddressFamily::Inet;
    let mut dst = None;
    let mut route = Route {
        dst: Cidr::new(IpAddr::from([0u8; 4]), 0).ok()?,
        gateway: None,
        dev: None,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
        metric: 0,
        table: u32::from(msg.header.table),
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => route.gateway = route_ip(a),
            RouteAttribute::Oif(i) => route.dev = Some(*i),
            RouteAttribute::Priority(p) => route.metric = *p,
            RouteAttribute::Table(t) => route.table = *t,
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if v4 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u8; 16]) });
    route.dst = Cidr::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(route)
}

impl Netlink {
    /// Every unicast route of both families in `table` (the main table when `None`).
    pub async fn routes(&self, table: Option<u32>) -> Result<Vec<Route>> {
        let table = table.unwrap_or(MAIN_TABLE);
        let mut out = Vec::new();
        for request in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<Route> = self
                .handle
                .route()
                .get(request)
                .execute()
                .try_filter_map(|msg| futures::future::ok(from_message(&msg)))
                .try_collect()
                .await
                .map_err(|e| NetError::kernel("list", "routes", e))?;
            out.extend(routes.into_iter().filter(|r| r.table == table));
        }
        Ok(out)
    }

    /// The route the kernel holds for the spec's key (table, destination, metric), if any.
    pub async fn find_route(&self, spec: &RouteSpec) -> Result<Option<Route>> {
        let metric = spec.metric.unwrap_or(0);
        Ok(self
            .routes(Some(spec.table()))
            .await?
            .into_iter()
            .find(|r| r.dst == spec.dst && r.metric == metric))
    }

    /// Adds a route; fails if one with the same key exists.
    pub async fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        spec.validate()?;
        self.request_ack(RouteNetlinkMessage::NewRoute(spec.message()), NLM_F_CREATE | NLM_F_EXCL)
            .await
            .map_err(|e| NetError::kernel("add route", spec.dst.to_string(), e))
    }

    /// Makes sure the route exists as specified: a matching route is left alone, a route with the
    /// same key but another next hop is replaced. Returns true when something changed.
    pub async fn ensure_route(&self, spec: &RouteSpec) -> Result<bool> {
        spec.validate()?;
        if let Some(existing) = self.find_route(spec).await? {
            let same = existing.gateway == spec.gateway
                && (spec.dev.is_none() || existing.dev == spec.dev)
                && existing.onlink == spec.onlink;
            if same {
                return Ok(false);
            }
        }
        self.request_ack(RouteNetlinkMessage::NewRoute(spec.message()), NLM_F_CREATE | NLM_F_REPLACE)
            .await
            .map_err(|e| NetError::kernel("replace route", spec.dst.to_string(), e))?;
        Ok(true)
    }

    /// Deletes the route with the spec's key.
    pub async fn delete_route(&self, spec: &RouteSpec) -> Result<()> {
        spec.validate()?;
        // Match any protocol and scope, as `ip route del` does.
        let mut message = spec.message();
        message.header.protocol = RouteProtocol::Unspec;
        message.header.scope = RouteScope::NoWhere;
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == nix::errno::Errno::ESRCH as i32 => {
                Err(NetError::NotFound { op: "delete route", object: spec.dst.to_string() })
            }
            Err(e) => Err(NetError::kernel("delete route", spec.dst.to_string(), e)),
        }
    }
}
