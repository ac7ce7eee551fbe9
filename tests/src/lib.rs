//! The virtual-host test bed that weft's end-to-end tests run on, and nothing else.
//!
//! [`VirtualHosts`] builds N hosts, each a network namespace whose `eth0` is a veth to a bridge
//! inside a switch namespace, with underlay addresses from 198.51.100.0/24 (TEST-NET-2, never
//! routed) and 2001:db8::/64 (IPv6 documentation space). Names carry a per-test unique suffix, so tests run in parallel, and every namespace
//! the bed made is removed when it is dropped, also when a test panics. It never touches the root
//! network namespace.

pub mod cluster;
pub mod history;
pub mod interrupt;
/// Test images (re-exported from `weft-test-images`, which the runtime's tests use alone).
pub use weft_test_images as images;
pub mod overlay;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::CloneFlags;
use weft_net::{BridgeSpec, Cidr, NetNs, Netlink, NetnsWorker, VethSpec};

/// The underlay network every test bed uses, inside its own switch only.
pub const UNDERLAY: &str = "198.51.100.0/24";

/// Name of the bridge inside the switch namespace.
pub const SWITCH_BRIDGE: &str = "sw0";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A prefix unique to this process and call: `wt<pid>x<n>`.
pub fn unique_prefix() -> String {
    format!("wt{}x{}", std::process::id(), SEQUENCE.fetch_add(1, Ordering::SeqCst))
}

/// A named network namespace with a worker thread inside; deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    ns: Option<NetNs>,
    worker: Option<NetnsWorker>,
    /// Made by this test bed (and removed when dropped), not only opened.
    owned: bool,
}

impl Namespace {
    /// Creates `/run/netns/NAME`. A stale namespace of the same name (left by a killed run whose
    /// pid was reused) is removed first.
    pub fn create(name: &str) -> weft_net::Result<Namespace> {
        if NetNs::exists(name) {
            NetNs::delete(name)?;
        }
        let ns = NetNs::create(name)?;
        let worker = match ns.worker() {
            Ok(w) => w,
            Err(e) => {
                drop(ns);
                let _ = NetNs::delete(name);
                return Err(e);
            }
        };
        Ok(Namespace { name: name.to_string(), ns: Some(ns), worker: Some(worker), owned: true })
    }

    /// The network namespace of process `pid` (a container's), opened for commands and netlink
    /// work; it is left alone when dropped.
    pub fn of_process(pid: u32) -> weft_net::Result<Namespace> {
        let ns = NetNs::of_pid(pid)?;
        let worker = ns.worker()?;
        Ok(Namespace { name: format!("pid {pid}"), ns: Some(ns), worker: Some(worker), owned: false })
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open namespace.
    pub fn netns(&self) -> &NetNs {
        self.ns.as_ref().expect("namespace open until drop")
    }

    /// Runs netlink work inside the namespace, from synchronous test code.
    pub fn netlink<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.worker().run_blocking(f).expect("netns job finished")
    }

    /// The worker thread inside the namespace, for async callers.
    pub fn worker(&self) -> &NetnsWorker {
        self.worker.as_ref().expect("worker alive until drop")
    }

    /// Runs a blocking closure on a fresh thread inside the namespace.
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let ns = self.netns();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    ns.enter().expect("enter namespace");
                    f()
                })
                .join()
                .expect("closure inside namespace panicked")
        })
    }

    /// A command that will run inside the namespace (setns between fork and exec). The child is
    /// SIGKILLed when the thread that spawned it dies, so a test that aborts leaves no process
    /// holding its namespaces.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.netns().as_raw_fd();
        // SAFETY: between fork and exec we only call setns(2), which is async-signal-safe; the fd
        // stays open in the parent for as long as this Namespace lives.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                nix::sched::setns(BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))
            });
        }
        cmd
    }

    /// Runs `program args...` inside the namespace and returns its output.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.worker.take();
        self.ns.take();
        if self.owned {
            let _ = NetNs::delete(&self.name);
        }
    }
}

/// One virtual host: a namespace with `eth0` on the shared underlay.
#[derive(Debug)]
pub struct VirtualHost {
    ns: Namespace,
    /// Position in the test bed.
    pub index: usize,
    /// Underlay address of `eth0`.
    pub addr: Ipv4Addr,
    /// IPv6 underlay address of `eth0` (2001:db8::N/64, documentation space), for the tests of
    /// an IPv6 underlay.
    pub addr6: Ipv6Addr,
    port: String,
}

impl VirtualHost {
    /// The underlay address of the family asked for.
    pub fn underlay(&self, ipv6: bool) -> IpAddr {
        if ipv6 { self.addr6.into() } else { self.addr.into() }
    }
}

impl std::ops::Deref for VirtualHost {
    type Target = Namespace;
    fn deref(&self) -> &Namespace {
        &self.ns
    }
}

/// N virtual hosts on one switch. See the crate documentation.
#[derive(Debug)]
pub struct VirtualHosts {
    prefix: String,
    hosts: Vec<VirtualHost>,
    extra: Mutex<Vec<std::sync::Arc<Namespace>>>,
    children: Mutex<Vec<Child>>,
    switch: Namespace,
}

/// Options of a test bed.
#[derive(Debug, Clone, Copy)]
pub struct BedOptions {
    /// Number of hosts.
    pub hosts: usize,
    /// MTU of the underlay links.
    pub mtu: u32,
}

impl Default for BedOptions {
    fn default() -> BedOptions {
        BedOptions { hosts: 2, mtu: 1500 }
    }
}

impl VirtualHosts {
    /// `n` hosts with a 1500-byte underlay.
    pub fn new(n: usize) -> VirtualHosts {
        VirtualHosts::with(BedOptions { hosts: n, ..BedOptions::default() })
    }

    /// A test bed with the given options. Panics (after cleaning up) if it cannot be built.
    pub fn with(options: BedOptions) -> VirtualHosts {
        assert!((1..=250).contains(&options.hosts), "1 to 250 hosts");
        let prefix = unique_prefix();
        let switch = Namespace::create(&format!("{prefix}-sw")).expect("create switch namespace");
        let mut bed = VirtualHosts {
            prefix: prefix.clone(),
            hosts: Vec::new(),
            extra: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            switch,
        };
        let mtu = options.mtu;
        bed.switch
            .netlink(move |nl| async move {
                nl.ensure_bridge(&BridgeSpec { mtu: Some(mtu), ..BridgeSpec::new(SWITCH_BRIDGE) }).await?;
                let lo = nl.require_link("lo").await?;
                nl.set_up(lo.index).await
            })
            .expect("switch bridge");
        for index in 0..options.hosts {
            let host = bed.make_host(index, mtu);
            bed.hosts.push(host);
        }
        bed
    }

    fn make_host(&self, index: usize, mtu: u32) -> VirtualHost {
        let ns = Namespace::create(&format!("{}-h{index}", self.prefix)).expect("create host namespace");
        let addr = Ipv4Addr::new(198, 51, 100, index as u8 + 1);
        let addr6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, index as u16 + 1);
        let port = format!("h{index}");
        let target = ns.netns().clone();
        let port_name = port.clone();
        self.switch
            .netlink(move |nl| async move {
                let sw = nl.require_link(SWITCH_BRIDGE).await?;
                let spec = VethSpec {
                    peer_netns: Some(target),
                    mtu: Some(mtu),
                    master: Some(sw.index),
                    ..VethSpec::new(port_name, "eth0")
                };
                nl.ensure_veth(&spec).await
            })
            .expect("underlay veth");
        ns.netlink(move |nl| async move {
            let lo = nl.require_link("lo").await?;
            nl.set_up(lo.index).await?;
            let eth0 = nl.require_link("eth0").await?;
            nl.ensure_address(eth0.index, Cidr::new(addr.into(), 24).expect("/24")).await?;
            nl.ensure_address(eth0.index, Cidr::new(addr6.into(), 64).expect("/64")).await?;
            nl.set_up(eth0.index).await
        })
        .expect("host underlay address");
        VirtualHost { ns, index, addr, addr6, port }
    }

    /// Gives every host a permanent neighbour entry for every other host's underlay addresses
    /// (IPv4 and IPv6). The hosts of a bed share one kernel, and the kernel's neighbour tables
    /// are one per protocol for all namespaces: past about 30 hosts that talk to each other,
    /// their learned underlay entries outgrow `gc_thresh3` (1024 by default) and new ones fail
    /// with "neighbor table overflow", which separate machines, each with its own table of at
    /// most a few hundred peers, never see. Permanent entries are outside that count. Benches
    /// of many hosts call this; tests of a few hosts keep the kernel's own resolution.
    pub fn pin_underlay_neighbours(&self) {
        let peers: Vec<(IpAddr, IpAddr, weft_net::MacAddr)> = self
            .hosts
            .iter()
            .map(|h| {
                let eth0 = h.netlink(|nl| async move { nl.require_link("eth0").await }).expect("eth0");
                (h.addr.into(), h.addr6.into(), eth0.mac.expect("eth0 has an Ethernet address"))
            })
            .collect();
        for host in &self.hosts {
            let (me, peers) = (IpAddr::from(host.addr), peers.clone());
            host.netlink(move |nl| async move {
                let eth0 = nl.require_link("eth0").await?;
                for (v4, v6, mac) in peers.into_iter().filter(|(v4, _, _)| *v4 != me) {
                    nl.replace_neighbour(eth0.index, v4, mac).await?;
                    nl.replace_neighbour(eth0.index, v6, mac).await?;
                }
                Ok::<(), weft_net::NetError>(())
            })
            .unwrap_or_else(|e| panic!("pinning the underlay neighbours of h{}: {e}", host.index));
        }
    }

    /// The unique prefix of every name this bed made.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &VirtualHost {
        &self.hosts[i]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[VirtualHost] {
        &self.hosts
    }

    /// The switch namespace.
    pub fn switch(&self) -> &Namespace {
        &self.switch
    }

    /// Names of every namespace this bed made (switch, hosts, extras).
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![self.switch.name().to_string()];
        names.extend(self.hosts.iter().map(|h| h.name().to_string()));
        names.extend(self.extra.lock().unwrap().iter().map(|n| n.name().to_string()));
        names
    }

    /// Creates another namespace owned by the bed (a container, an "outside" network), removed
    /// with the bed. Returns its name; use [`VirtualHosts::with_namespace`] to work in it.
    pub fn add_namespace(&self, label: &str) -> String {
        let ns = Namespace::create(&format!("{}-{label}", self.prefix)).expect("create namespace");
        let name = ns.name().to_string();
        self.extra.lock().unwrap().push(std::sync::Arc::new(ns));
        name
    }

    /// Runs `f` with the extra namespace called `name`.
    pub fn with_namespace<T>(&self, name: &str, f: impl FnOnce(&Namespace) -> T) -> T {
        f(&self.namespace(name))
    }

    /// The extra namespace called `name` (shared, so several can be held at once).
    pub fn namespace(&self, name: &str) -> std::sync::Arc<Namespace> {
        let extra = self.extra.lock().unwrap();
        extra.iter().find(|n| n.name() == name).cloned().unwrap_or_else(|| panic!("no namespace {name}"))
    }

    /// Cuts host `i` off the underlay (its switch port goes down; the host's own config stays).
    pub fn cut(&self, i: usize) {
        self.set_port(i, false);
    }

    /// Restores host `i`'s underlay link.
    pub fn restore(&self, i: usize) {
        self.set_port(i, true);
    }

    fn set_port(&self, i: usize, up: bool) {
        let port = self.hosts[i].port.clone();
        self.switch
            .netlink(move |nl| async move {
                let link = nl.require_link(&port).await?;
                if up { nl.set_up(link.index).await } else { nl.set_down(link.index).await }
            })
            .expect("set switch port");
    }

    /// Starts `cmd` and keeps the child, so it is killed when the bed is dropped.
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let child = cmd.spawn().expect("spawn");
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        pid
    }
}

impl Drop for VirtualHosts {
    fn drop(&mut self) {
        for mut child in self.children.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.extra.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.hosts.clear();
    }
}

/// Pings `target` from `ns` (`count` packets, 0.2 s apart); true when every reply came back.
pub fn ping(ns: &Namespace, target: &str, count: u32) -> bool {
    let count = count.to_string();
    ns.output("ping", &["-c", &count, "-i", "0.2", "-W", "1", "-q", target]).status.success()
}

/// Like [`ping`] with extra arguments (e.g. `-M do -s 1322`).
pub fn ping_with(ns: &Namespace, target: &str, extra: &[&str]) -> Output {
    let mut args = vec!["-c", "1", "-W", "2"];
    args.extend_from_slice(extra);
    args.push(target);
    ns.output("ping", &args)
}

/// Lists the names in `ip netns list`.
pub fn netns_names() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Runs one iperf3 TCP test from `client` to a one-off server inside `server_ns` bound to `addr`
/// and returns the receiver's bits per second. Retries while the server is not yet listening (or
/// answered a connection attempt that raced its start); panics with iperf3's report otherwise.
pub fn iperf3(client: &Namespace, server_ns: &Namespace, addr: &str, seconds: u32, streams: u32) -> f64 {
    let (seconds, streams) = (seconds.to_string(), streams.to_string());
    let mut last = String::new();
    for _ in 0..5 {
        let mut server = server_ns
            .command("iperf3")
            .args(["-s", "-1", "-B", addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start iperf3 server");
        for _ in 0..100 {
            let out = client.output("iperf3", &["-c", addr, "-t", &seconds, "-P", &streams, "-J"]);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
                let _ = server.kill();
                let _ = server.wait();
                return bps;
            }
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            // Not listening yet: try again; anything else: start a fresh server.
            if report.get("error").is_some_and(|e| !e.as_str().unwrap_or("").contains("connect")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = server.kill();
        let _ = server.wait();
    }
    panic!("iperf3 to {addr} failed: {last}");
}
