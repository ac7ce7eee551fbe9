//! Links: bridge, veth and vxlan devices, read back as [`Link`].

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVxlan};

use crate::error::errno_of;
use crate::{MacAddr, NetError, NetNs, Netlink, Result, validate};

/// The IANA VXLAN port, the default for [`VxlanSpec`].
pub const VXLAN_PORT: u16 = 4789;

/// The kind of a link, as far as weft cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// A VXLAN device.
    Vxlan,
    /// Anything else, by the kernel's kind name (`None` for devices without one, such as `lo`).
    Other(Option<String>),
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Veth => f.write_str("veth"),
            LinkKind::Vxlan => f.write_str("vxlan"),
            LinkKind::Other(Some(k)) => f.write_str(k),
            LinkKind::Other(None) => f.write_str("plain"),
        }
    }
}

/// The VXLAN attributes of a vxlan link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    /// The VNI.
    pub vni: u32,
    /// The local (source) underlay address.
    pub local: Option<IpAddr>,
    /// The UDP destination port.
    pub port: u16,
    /// Whether the device learns remote MACs from traffic.
    pub learning: bool,
    /// The underlay device's index.
    pub underlay: Option<u32>,
    /// Whether outer UDP checksums are computed (IPv4 underlays may send zero).
    pub udp_csum: bool,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Device kind.
    pub kind: LinkKind,
    /// MTU.
    pub mtu: u32,
    /// Ethernet address.
    pub mac: Option<MacAddr>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier present (IFF_LOWER_UP).
    pub lower_up: bool,
    /// Index of the bridge it is attached to.
    pub master: Option<u32>,
    /// IFLA_LINK: the underlay device, or a veth's peer index (in the peer's namespace).
    pub link: Option<u32>,
    /// VXLAN attributes, for vxlan links.
    pub vxlan: Option<VxlanInfo>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: LinkKind::Other(None),
            mtu: 0,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
            master: None,
            link: None,
            vxlan: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
                LinkAttribute::Controller(index) => link.master = Some(*index),
                LinkAttribute::Link(index) => link.link = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => {
                                link.kind = match kind {
                                    InfoKind::Bridge => LinkKind::Bridge,
                                    InfoKind::Veth => LinkKind::Veth,
                                    InfoKind::Vxlan => LinkKind::Vxlan,
                                    other => LinkKind::Other(Some(other.to_string())),
                                }
                            }
                            LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                                link.vxlan = Some(vxlan_info(attrs));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn vxlan_info(attrs: &[InfoVxlan]) -> VxlanInfo {
    let mut info =
        VxlanInfo { vni: 0, local: None, port: 0, learning: true, underlay: None, udp_csum: false };
    for attr in attrs {
        match attr {
            InfoVxlan::Id(vni) => info.vni = *vni,
            InfoVxlan::Local(ip) => info.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => info.local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Port(port) => info.port = *port,
            InfoVxlan::Learning(on) => info.learning = *on,
            InfoVxlan::Link(index) => info.underlay = Some(*index),
            InfoVxlan::UDPCsum(on) => info.udp_csum = *on,
            _ => {}
        }
    }
    info
}

/// A bridge to create or ensure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Interface name.
    pub name: String,
    /// MTU, or the kernel's default.
    pub mtu: Option<u32>,
    /// Ethernet address, or a random one.
    pub mac: Option<MacAddr>,
    /// Bring it up.
    pub up: bool,
}

impl BridgeSpec {
    /// An up bridge called `name` with kernel defaults.
    pub fn new(name: impl Into<String>) -> BridgeSpec {
        BridgeSpec { name: name.into(), mtu: None, mac: None, up: true }
    }

    fn validate(&self) -> Result<()> {
        validate::link_name(&self.name)?;
        self.mtu.map(validate::mtu).transpose()?;
        Ok(())
    }
}

/// A veth pair to create or ensure. The peer can be created directly inside another namespace,
/// as a container's `eth0`, so it never appears in this one.
#[derive(Debug, Clone)]
pub struct VethSpec {
    /// Name of the end that stays in this namespace.
    pub name: String,
    /// Name of the other end.
    pub peer_name: String,
    /// Namespace the peer is created in, or this one.
    pub peer_netns: Option<NetNs>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// Bridge (index) to attach this end to.
    pub master: Option<u32>,
    /// Bring this end up (the peer is configured inside its own namespace).
    pub up: bool,
}

impl VethSpec {
    /// An up veth pair `name` <-> `peer_name`, both in this namespace.
    pub fn new(name: impl Into<String>, peer_name: impl Into<String>) -> VethSpec {
        VethSpec {
            name: name.into(),
            peer_name: peer_name.into(),
            peer_netns: None,
            mtu: None,
            master: None,
            up: true,
        }
    }

    fn validate(&self) -> Result<()> {
        validate::link_name(&self.name)?;
        validate::link_name(&self.peer_name)?;
        if self.peer_netns.is_none() && self.name == self.peer_name {
            return Err(NetError::invalid("veth peer name", &self.peer_name, "same as the link's own name"));
        }
        self.mtu.map(validate::mtu).transpose()?;
        Ok(())
    }
}

/// A VXLAN device to create or ensure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Interface name.
    pub name: String,
    /// VXLAN network identifier, 1..=16777215.
    pub vni: u32,
    /// Local underlay address (source of encapsulated packets).
    pub local: Option<IpAddr>,
    /// UDP port.
    pub port: u16,
    /// MAC learning from traffic; weft keeps it off and programs the FDB itself.
    pub learning: bool,
    /// Underlay device index.
    pub underlay: Option<u32>,
    /// Compute outer UDP checksums. Off by default for IPv4 underlays (RFC 7348 allows a zero
    /// checksum; the inner packet carries its own): measured 10-15% more throughput here.
    pub udp_csum: bool,
    /// MTU (the underlay's minus 50 for IPv4 underlays).
    pub mtu: Option<u32>,
    /// Ethernet address.
    pub mac: Option<MacAddr>,
    /// Bring it up.
    pub up: bool,
}

impl VxlanSpec {
    /// An up VXLAN device with learning off on the standard port.
    pub fn new(name: impl Into<String>, vni: u32) -> VxlanSpec {
        VxlanSpec {
            name: name.into(),
            vni,
            local: None,
            port: VXLAN_PORT,
            learning: false,
            underlay: None,
            udp_csum: false,
            mtu: None,
            mac: None,
            up: true,
        }
    }

    fn validate(&self) -> Result<()> {
        validate::link_name(&self.name)?;
        validate::vni(self.vni)?;
        if self.port == 0 {
            return Err(NetError::invalid("VXLAN port", 0, "must be 1..=65535"));
        }
        self.mtu.map(validate::mtu).transpose()?;
        Ok(())
    }

    fn matches(&self, info: &VxlanInfo) -> bool {
        info.vni == self.vni
            && info.local == self.local
            && info.port == self.port
            && info.learning == self.learning
            && info.udp_csum == self.udp_csum
            && (self.underlay.is_none() || info.underlay == self.underlay)
    }
}

impl Netlink {
    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|msg| Link::from_message(&msg))
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list", "links", e))
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        validate::link_name(name)?;
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(|m| Link::from_message(&m))),
            Err(e) if errno_of(&e) == libc_enodev() => Ok(None),
            Err(e) => Err(NetError::kernel("get", format!("link {name}"), e)),
        }
    }

    /// The link with `index`, if there is one.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(|m| Link::from_message(&m))),
            Err(e) if errno_of(&e) == libc_enodev() => Ok(None),
            Err(e) => Err(NetError::kernel("get", format!("link #{index}"), e)),
        }
    }

    /// The link called `name`, or a NotFound error.
    pub async fn require_link(&self, name: &str) -> Result<Link> {
        self.link(name).await?.ok_or_else(|| NetError::NotFound { op: "get", object: format!("link {name}") })
    }

    async fn add_link(&self, op: &'static str, name: &str, message: LinkMessage) -> Result<Link> {
        self.request_ack(RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL)
            .await
            .map_err(|e| NetError::kernel(op, format!("link {name}"), e))?;
        self.require_link(name).await
    }

    /// Creates a bridge; fails if the name is taken.
    pub async fn add_bridge(&self, spec: &BridgeSpec) -> Result<Link> {
        spec.validate()?;
        let mut builder = LinkBridge::new(&spec.name);
        builder = with_common(builder, spec.mtu, spec.mac, spec.up);
        self.add_link("create bridge", &spec.name, builder.build()).await
    }

    /// Makes sure the bridge exists with the spec's attributes.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<Link> {
        spec.validate()?;
        let link = match self.link(&spec.name).await? {
            Some(link) => link,
            None => match self.add_bridge(spec).await {
                // Created by someone else between the lookup and the add: take it as found.
                Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => {
                    self.require_link(&spec.name).await?
                }
                created => return created,
            },
        };
        if link.kind != LinkKind::Bridge {
            return Err(wrong_kind(&link, "bridge"));
        }
        self.correct(link, spec.mtu, spec.mac, None, spec.up).await
    }

    /// Creates a veth pair, the peer directly inside `spec.peer_netns` when given.
    pub async fn add_veth(&self, spec: &VethSpec) -> Result<Link> {
        spec.validate()?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.clone());
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(ns) = &spec.peer_netns {
            peer = peer.setns_by_fd(ns.as_raw_fd());
        }
        let mut builder = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(spec.name.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(master) = spec.master {
            builder = builder.controller(master);
        }
        if spec.up {
            builder = builder.up();
        }
        self.add_link("create veth", &spec.name, builder.build()).await
    }

    /// Makes sure this end of the veth pair exists with the spec's attributes. An existing veth of
    /// that name is kept (its peer is not checked: it may live in a namespace we cannot see).
    pub async fn ensure_veth(&self, spec: &VethSpec) -> Result<Link> {
        spec.validate()?;
        match self.link(&spec.name).await? {
            None => self.add_veth(spec).await,
            Some(link) if link.kind != LinkKind::Veth => Err(wrong_kind(&link, "veth")),
            Some(link) => self.correct(link, spec.mtu, None, spec.master.map(Some), spec.up).await,
        }
    }

    /// Creates a VXLAN device.
    pub async fn add_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        spec.validate()?;
        let mut builder = LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .learning(spec.learning)
            .udp_csum(spec.udp_csum);
        match spec.local {
            Some(IpAddr::V4(ip)) => builder = builder.local(ip),
            Some(IpAddr::V6(ip)) => builder = builder.local6(ip),
            None => {}
        }
        if let Some(dev) = spec.underlay {
            builder = builder.dev(dev);
        }
        builder = with_common(builder, spec.mtu, spec.mac, spec.up);
        self.add_link("create vxlan", &spec.name, builder.build()).await
    }

    /// Makes sure the VXLAN device exists with the spec's attributes. VNI, local address, port,
    /// learning and underlay cannot be changed on a live device, so a device that differs in those
    /// is deleted and created again; MTU, MAC and up state are corrected in place.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        spec.validate()?;
        match self.link(&spec.name).await? {
            None => self.add_vxlan(spec).await,
            Some(link) if link.kind != LinkKind::Vxlan => Err(wrong_kind(&link, "vxlan")),
            Some(link) if !link.vxlan.as_ref().is_some_and(|info| spec.matches(info)) => {
                self.delete_link(link.index).await?;
                self.add_vxlan(spec).await
            }
            Some(link) => self.correct(link, spec.mtu, spec.mac, None, spec.up).await,
        }
    }

    /// Applies only the attributes that differ; returns the link as it is afterwards.
    async fn correct(
        &self,
        link: Link,
        mtu: Option<u32>,
        mac: Option<MacAddr>,
        master: Option<Option<u32>>,
        up: bool,
    ) -> Result<Link> {
        let mut changed = false;
        if let Some(mtu) = mtu.filter(|m| *m != link.mtu) {
            self.set_mtu(link.index, mtu).await?;
            changed = true;
        }
        if let Some(mac) = mac.filter(|m| Some(*m) != link.mac) {
            self.set_mac(link.index, mac).await?;
            changed = true;
        }
        if let Some(master) = master.filter(|m| *m != link.master) {
            self.set_master(link.index, master).await?;
            changed = true;
        }
        if up && !link.up {
            self.set_up(link.index).await?;
            changed = true;
        }
        if !changed {
            return Ok(link);
        }
        self.link_by_index(link.index)
            .await?
            .ok_or_else(|| NetError::NotFound { op: "get", object: format!("link {}", link.name) })
    }

    async fn change(&self, op: &'static str, index: u32, message: LinkMessage) -> Result<()> {
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(|e| NetError::kernel(op, format!("link #{index}"), e))
    }

    /// Sets the link administratively up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.change("set up", index, LinkUnspec::new_with_index(index).up().build()).await
    }

    /// Sets the link administratively down.
    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.change("set down", index, LinkUnspec::new_with_index(index).down().build()).await
    }

    /// Sets the MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        validate::mtu(mtu)?;
        self.change("set mtu", index, LinkUnspec::new_with_index(index).mtu(mtu).build()).await
    }

    /// Sets the Ethernet address.
    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<()> {
        let message = LinkUnspec::new_with_index(index).address(mac.octets().to_vec()).build();
        self.change("set address", index, message).await
    }

    /// Attaches the link to bridge `master`, or detaches it with `None`.
    pub async fn set_master(&self, index: u32, master: Option<u32>) -> Result<()> {
        let builder = LinkUnspec::new_with_index(index);
        let message = match master {
            Some(m) => builder.controller(m).build(),
            None => builder.nocontroller().build(),
        };
        self.change("set master", index, message).await
    }

    /// Moves the link into another namespace.
    pub async fn set_netns(&self, index: u32, ns: &NetNs) -> Result<()> {
        let message = LinkUnspec::new_with_index(index).setns_by_fd(ns.as_raw_fd()).build();
        self.change("move to namespace", index, message).await
    }

    /// Renames the link (it must be down).
    pub async fn set_name(&self, index: u32, name: &str) -> Result<()> {
        validate::link_name(name)?;
        self.change("rename", index, LinkUnspec::new_with_index(index).name(name.to_string()).build()).await
    }

    /// Deletes the link (a veth takes its peer with it).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetError::kernel("delete", format!("link #{index}"), e))
    }

    /// Deletes the link called `name`; false when there was none.
    pub async fn delete_link_by_name(&self, name: &str) -> Result<bool> {
        match self.link(name).await? {
            Some(link) => self.delete_link(link.index).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// The link that holds address `ip` (the underlay device for an advertise address).
    pub async fn link_of_address(&self, ip: IpAddr) -> Result<Link> {
        let addrs = self.addresses(None).await?;
        let found = addrs
            .iter()
            .find(|a| a.cidr.addr() == ip)
            .ok_or_else(|| NetError::NotFound { op: "find interface of", object: format!("address {ip}") })?;
        self.link_by_index(found.index)
            .await?
            .ok_or_else(|| NetError::NotFound { op: "get", object: format!("link #{}", found.index) })
    }

    /// The MTU of the interface that carries `ip`.
    pub async fn underlay_mtu(&self, ip: IpAddr) -> Result<u32> {
        Ok(self.link_of_address(ip).await?.mtu)
    }
}

/// Applies the attributes every link kind shares.
fn with_common<T>(
    mut builder: LinkMessageBuilder<T>,
    mtu: Option<u32>,
    mac: Option<MacAddr>,
    up: bool,
) -> LinkMessageBuilder<T> {
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    if let Some(mac) = mac {
        builder = builder.address(mac.octets().to_vec());
    }
    if up {
        builder = builder.up();
    }
    builder
}

fn wrong_kind(link: &Link, wanted: &'static str) -> NetError {
    NetError::WrongKind { name: link.name.clone(), found: link.kind.to_string(), wanted }
}

const fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}
