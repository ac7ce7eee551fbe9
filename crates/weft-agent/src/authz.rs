//! Who may call what. Every call on a manager's TLS listener (and on the local socket, which is
//! root's) passes one table, [`TABLE`], before its request body is decoded: a row per method,
//! naming the callers it is for. The caller is what its certificate says, corrected by the
//! replicated state: a removed node is refused everywhere, and a node's role is the one the
//! state gives it (a demoted manager's old certificate no longer makes it a manager). Checks that
//! depend on the request (a worker may heartbeat and hold addresses only for itself; no client
//! may send the leader's own commands) are [`command`] and [`Caller::may_speak_for`], called by
//! the handlers.
//!
//! Pure except for [`AuthzLayer`], the tower layer that applies the table to HTTP requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use weft_proto::v1 as pb;
use weft_state::{Role, State, names::node_id_text};

use crate::listener::Peer;
use crate::pki::{CertIdentity, CertRole};
use crate::reason;

/// A refusal by this module: PermissionDenied, with the reason that says it was authorization.
pub(crate) fn denied(message: impl Into<String>) -> Status {
    reason::status(tonic::Code::PermissionDenied, pb::Reason::NotAuthorized, message)
}

/// A refusal of a caller without a certificate.
fn unauthenticated(message: impl Into<String>) -> Status {
    reason::status(tonic::Code::Unauthenticated, pb::Reason::NotAuthorized, message)
}

/// Bytes an unauthenticated request (a Join) may carry at most.
pub const ANONYMOUS_BODY_LIMIT: usize = 16 << 10;

/// The authenticated caller of one request, put into the request's extensions by the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Through the local socket: root on this host, with this node's powers.
    Local,
    /// No client certificate (only Join is open to it).
    Anonymous,
    /// An admin client certificate (`weft cluster cert admin`).
    Admin {
        /// Its common name.
        name: String,
    },
    /// A node of the cluster.
    Node {
        /// Its id.
        id: u64,
        /// Its role as the replicated state has it (never more than its certificate says).
        role: Role,
        /// Its certificate is a manager's (raft transport: a demoted voter still has to take part
        /// until the membership change that removes it commits).
        manager_cert: bool,
    },
    /// A node removed from the cluster: refused everywhere.
    Revoked {
        /// Its id.
        id: u64,
    },
}

/// A column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The local socket.
    Local,
    /// An admin certificate.
    Admin,
    /// A manager node.
    Manager,
    /// A worker node.
    Worker,
    /// No certificate.
    Anonymous,
}

impl Who {
    fn text(self) -> &'static str {
        match self {
            Who::Local => "the local socket",
            Who::Admin => "admin certificates",
            Who::Manager => "managers",
            Who::Worker => "workers",
            Who::Anonymous => "callers without a certificate",
        }
    }
}

/// One row: a gRPC method (or, ending in `/`, every method of a service) and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `/package.Service/Method`, or `/package.Service/` for the whole service.
    pub path: &'static str,
    /// The callers allowed.
    pub allowed: &'static [Who],
    /// What the handler checks beyond the row, for the README's table.
    pub note: &'static str,
}

use Who::{Admin, Anonymous, Local, Manager, Worker};

/// The authorization table, written once: the README prints it, the tests walk it row by row.
pub const TABLE: &[Rule] = &[
    Rule {
        path: "/weft.v1.Cluster/Join",
        allowed: &[Local, Admin, Manager, Worker, Anonymous],
        note: "proves a join token of the current generation",
    },
    Rule {
        path: "/weft.v1.Cluster/Apply",
        allowed: &[Local, Admin, Manager, Worker],
        note: "workers: endpoints of their own node only; networks need a manager or admin; the leader's own commands never",
    },
    Rule {
        path: "/weft.v1.Cluster/Heartbeat",
        allowed: &[Local, Manager, Worker],
        note: "workers for themselves; managers also forward their workers'",
    },
    Rule {
        path: "/weft.v1.Cluster/Heartbeats",
        allowed: &[Local, Manager, Worker],
        note: "every beat: workers for themselves, managers also relay their workers'; a removed node's session ends",
    },
    Rule { path: "/weft.v1.Cluster/Watch", allowed: &[Local, Admin, Manager, Worker], note: "" },
    Rule { path: "/weft.v1.Cluster/GetState", allowed: &[Local, Admin, Manager, Worker], note: "" },
    Rule { path: "/weft.v1.Cluster/Nodes", allowed: &[Local, Admin, Manager, Worker], note: "" },
    Rule { path: "/weft.v1.Cluster/Info", allowed: &[Local, Admin, Manager, Worker], note: "" },
    Rule {
        path: "/weft.v1.Cluster/Why",
        allowed: &[Local, Admin, Manager, Worker],
        note: "read-only; workers forward their local CLI's",
    },
    Rule { path: "/weft.v1.Cluster/ChangeRole", allowed: &[Local, Admin, Manager], note: "" },
    Rule { path: "/weft.v1.Cluster/RemoveNode", allowed: &[Local, Admin, Manager], note: "revokes the node" },
    Rule { path: "/weft.v1.Cluster/Token", allowed: &[Local, Admin, Manager], note: "" },
    Rule { path: "/weft.v1.Cluster/RotateToken", allowed: &[Local, Admin, Manager], note: "" },
    Rule { path: "/weft.v1.Cluster/IssueAdminCert", allowed: &[Local, Admin, Manager], note: "" },
    Rule {
        path: "/weft.v1.Cluster/RenewCert",
        allowed: &[Manager, Worker],
        note: "a node's own certificate, with the role the state gives it",
    },
    Rule {
        path: "/weft.v1.Cluster/ManagerKit",
        allowed: &[Manager, Worker],
        note: "only a node the state has made a manager, for itself",
    },
    Rule {
        path: "/weft.v1.RaftTransport/Stream",
        allowed: &[Manager],
        note: "a manager's certificate; each message's sender must be that node and a raft member",
    },
    Rule { path: "/weft.v1.Agent/", allowed: &[Local, Admin], note: "every call of a host's Agent API" },
];

/// The row that governs `path`.
pub fn rule(path: &str) -> Option<&'static Rule> {
    TABLE.iter().find(|r| !r.path.ends_with('/') && r.path == path).or_else(|| {
        TABLE.iter().find(|r| r.path.ends_with('/') && path.starts_with(r.path) && path.len() > r.path.len())
    })
}

/// Where a node stands in the replicated state, for [`identify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A node of the cluster with this role.
    Member(Role),
    /// Removed: on the deny-list.
    Removed,
    /// Not (yet) in this manager's copy of the state: a node that has just joined.
    Unknown,
}

/// Looks nodes up in the replicated state.
pub trait Directory: Send + Sync {
    /// Where node `id` stands.
    fn standing(&self, id: u64) -> Standing;
}

impl Directory for State {
    fn standing(&self, id: u64) -> Standing {
        if self.is_revoked(id) {
            return Standing::Removed;
        }
        match self.node(id) {
            Some(n) => Standing::Member(n.role),
            None => Standing::Unknown,
        }
    }
}

/// The caller a client certificate makes, given where its node stands.
pub fn identify(identity: Option<&CertIdentity>, directory: &dyn Directory) -> Caller {
    let Some(identity) = identity else { return Caller::Anonymous };
    let (id, cert_role) = match (identity.role, identity.node) {
        (CertRole::Admin, _) => return Caller::Admin { name: identity.name.clone() },
        (role, Some(id)) => (id, role),
        (_, None) => return Caller::Anonymous,
    };
    let manager_cert = cert_role == CertRole::Manager;
    let role = match directory.standing(id) {
        Standing::Removed => return Caller::Revoked { id },
        Standing::Member(Role::Manager) if manager_cert => Role::Manager,
        Standing::Member(_) => Role::Worker,
        Standing::Unknown if manager_cert => Role::Manager,
        Standing::Unknown => Role::Worker,
    };
    Caller::Node { id, role, manager_cert }
}

impl Caller {
    /// The table's column for this caller on `rule`.
    fn who(&self, rule: &Rule) -> Option<Who> {
        match self {
            Caller::Local => Some(Local),
            Caller::Anonymous => Some(Anonymous),
            Caller::Admin { .. } => Some(Admin),
            Caller::Node { manager_cert: true, .. } if rule.path == "/weft.v1.RaftTransport/Stream" => {
                Some(Manager)
            }
            Caller::Node { role: Role::Manager, .. } => Some(Manager),
            Caller::Node { role: Role::Worker, .. } => Some(Worker),
            Caller::Revoked { .. } => None,
        }
    }

    /// The node behind the caller, if it is one.
    pub fn node(&self) -> Option<u64> {
        match self {
            Caller::Node { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// True when the caller may act for node `id` (heartbeats): the local socket and managers
    /// for anyone (a manager forwards its workers' heartbeats), a worker for itself.
    pub fn may_speak_for(&self, id: u64) -> bool {
        match self {
            Caller::Local | Caller::Node { role: Role::Manager, .. } => true,
            Caller::Node { id: me, role: Role::Worker, .. } => *me == id,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Caller::Local => "the local socket".into(),
            Caller::Anonymous => "a caller without a certificate".into(),
            Caller::Admin { name } => format!("admin certificate {name}"),
            Caller::Node { id, role, .. } => format!("{} node {}", role.as_str(), node_id_text(*id)),
            Caller::Revoked { id } => format!("removed node {}", node_id_text(*id)),
        }
    }
}

/// Decides whether `caller` may call `path` at all (before its body is read).
pub fn decide(path: &str, caller: &Caller) -> Result<(), Status> {
    if let Caller::Revoked { id } = caller {
        return Err(denied(format!(
            "node {} was removed from the cluster: its certificate is revoked",
            node_id_text(*id)
        )));
    }
    let Some(rule) = rule(path) else {
        return Err(denied(format!("{path} is not a call weft serves")));
    };
    match caller.who(rule) {
        Some(who) if rule.allowed.contains(&who) => Ok(()),
        Some(Anonymous) => Err(unauthenticated(
            "a client certificate of this cluster is required (join with a token, or use an admin certificate from `weft cluster cert admin`)",
        )),
        _ => {
            let allowed: Vec<&str> = rule.allowed.iter().map(|w| w.text()).collect();
            Err(denied(format!(
                "{} is for {} only; the caller is {}",
                method_name(path),
                allowed.join(", "),
                caller.describe()
            )))
        }
    }
}

fn method_name(path: &str) -> &str {
    path.rsplit('/').next().filter(|m| !m.is_empty()).unwrap_or(path)
}

/// Checks one command sent through `Apply` by `caller`; `endpoint_owner` tells which node holds
/// an endpoint (asked only when a worker releases one).
pub fn command(
    caller: &Caller,
    command: &pb::Command,
    endpoint_owner: impl Fn(u64) -> Option<u64>,
) -> Result<(), Status> {
    use pb::command::Kind;
    let kind = command.kind.as_ref().ok_or_else(|| Status::invalid_argument("no command"))?;
    let admin =
        matches!(caller, Caller::Local | Caller::Admin { .. } | Caller::Node { role: Role::Manager, .. });
    let worker = match caller {
        Caller::Node { id, role: Role::Worker, .. } => Some(*id),
        _ => None,
    };
    match kind {
        Kind::RegisterNode(_) | Kind::SetNodeStatus(_) | Kind::ExpireNode(_) => Err(denied(
            "node registration, status and expiry are the leader's own commands: no client may send them",
        )),
        Kind::SetNodeRole(_) | Kind::RemoveNode(_) | Kind::RotateJoinToken(_) => Err(denied(
            "roles, removals and token rotations go through their own calls (`weft node promote|demote|rm`, `weft cluster token rotate`), which check them",
        )),
        Kind::CreateNetwork(_) | Kind::DeleteNetwork(_) if !admin => Err(denied(format!(
            "creating and removing networks needs a manager or an admin certificate, and the caller is {}: run it on a manager, or with --host https://MANAGER and an admin certificate",
            caller.describe()
        ))),
        Kind::CreateNetwork(_) | Kind::DeleteNetwork(_) => Ok(()),
        Kind::AllocateEndpoint(c) => match worker {
            Some(me) if c.node_id != me => Err(denied(format!(
                "worker node {} may only take addresses for itself, not for node {}",
                node_id_text(me),
                node_id_text(c.node_id)
            ))),
            _ if admin || worker.is_some() => Ok(()),
            _ => Err(denied(format!("{} may not take addresses", caller.describe()))),
        },
        Kind::ReleaseEndpoint(c) => match (worker, worker.and_then(|_| endpoint_owner(c.endpoint_id))) {
            (Some(me), Some(owner)) if owner != me => Err(denied(format!(
                "worker node {} may only release its own addresses; endpoint {} is node {}'s",
                node_id_text(me),
                c.endpoint_id,
                node_id_text(owner)
            ))),
            _ if admin || worker.is_some() => Ok(()),
            _ => Err(denied(format!("{} may not release addresses", caller.describe()))),
        },
    }
}

/// The caller of a request, as the layer recorded it. A request that did not pass the layer
/// (there is none in weftd) is anonymous.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous)
}

/// Applies [`decide`] to every request of a server before the service sees it.
#[derive(Clone)]
pub struct AuthzLayer {
    source: Source,
    denied: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Source {
    Local,
    Tls(Arc<dyn Fn() -> Arc<State> + Send + Sync>),
}

impl AuthzLayer {
    /// For the local socket: every caller is [`Caller::Local`] (the socket is root's, mode 0600).
    pub fn local(denied: Arc<AtomicU64>) -> AuthzLayer {
        AuthzLayer { source: Source::Local, denied }
    }

    /// For a TLS listener whose connections carry a [`Peer`]; `state` is this manager's copy of
    /// the replicated state (for removals and roles). Refusals are counted in `denied`.
    pub fn tls(state: impl Fn() -> Arc<State> + Send + Sync + 'static, denied: Arc<AtomicU64>) -> AuthzLayer {
        AuthzLayer { source: Source::Tls(Arc::new(state)), denied }
    }

    fn caller(&self, peer: Option<&Peer>) -> Caller {
        match &self.source {
            Source::Local => Caller::Local,
            Source::Tls(state) => {
                let identity = peer.and_then(|p| p.identity.as_deref());
                identify(identity, &*state())
            }
        }
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner, layer: self.clone() }
    }
}

/// The service [`AuthzLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthzLayer,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Authorize<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let caller = self.layer.caller(request.extensions().get::<Peer>());
        if let Err(status) = decide(request.uri().path(), &caller) {
            self.layer.denied.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(path = request.uri().path(), caller = ?caller, "call refused");
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if caller == Caller::Anonymous {
            request = request
                .map(|body| tonic::body::Body::new(http_body_util::Limited::new(body, ANONYMOUS_BODY_LIMIT)));
        }
        request.extensions_mut().insert(caller);
        // The clone is the one polled ready; the fresh one waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Fixed(HashMap<u64, Standing>);

    impl Directory for Fixed {
        fn standing(&self, id: u64) -> Standing {
            self.0.get(&id).copied().unwrap_or(Standing::Unknown)
        }
    }

    fn cert(role: CertRole, node: Option<u64>) -> CertIdentity {
        CertIdentity {
            role,
            node,
            name: node.map_or("admin-1".into(), |id| format!("{id:016x}")),
            not_before: 0,
            not_after: 1,
            serial: "01".into(),
        }
    }

    fn directory() -> Fixed {
        Fixed(HashMap::from([
            (1, Standing::Member(Role::Manager)),
            (2, Standing::Member(Role::Worker)),
            (3, Standing::Removed),
            (4, Standing::Member(Role::Worker)),
            (5, Standing::Member(Role::Manager)),
        ]))
    }

    fn node(id: u64, role: Role, manager_cert: bool) -> Caller {
        Caller::Node { id, role, manager_cert }
    }

    #[test]
    fn certificates_become_callers_as_the_state_has_them() {
        let d = directory();
        assert_eq!(identify(None, &d), Caller::Anonymous);
        assert_eq!(
            identify(Some(&cert(CertRole::Admin, None)), &d),
            Caller::Admin { name: "admin-1".into() }
        );
        assert_eq!(identify(Some(&cert(CertRole::Manager, Some(1))), &d), node(1, Role::Manager, true));
        assert_eq!(identify(Some(&cert(CertRole::Worker, Some(2))), &d), node(2, Role::Worker, false));
        assert_eq!(identify(Some(&cert(CertRole::Worker, Some(3))), &d), Caller::Revoked { id: 3 });
        assert_eq!(identify(Some(&cert(CertRole::Manager, Some(3))), &d), Caller::Revoked { id: 3 });
        // Demoted: its manager certificate no longer makes it a manager, except on raft.
        assert_eq!(identify(Some(&cert(CertRole::Manager, Some(4))), &d), node(4, Role::Worker, true));
        // Promoted, before its new certificate: still a worker (it fetches the kit as one).
        assert_eq!(identify(Some(&cert(CertRole::Worker, Some(5))), &d), node(5, Role::Worker, false));
        // Not yet in this manager's state: what the certificate says.
        assert_eq!(identify(Some(&cert(CertRole::Manager, Some(9))), &d), node(9, Role::Manager, true));
    }

    /// Every row of the table, for every kind of caller: allowed exactly where the row says.
    #[test]
    fn every_row_admits_exactly_its_callers() {
        let callers = [
            (Local, Caller::Local),
            (Admin, Caller::Admin { name: "admin-1".into() }),
            (Manager, node(1, Role::Manager, true)),
            (Worker, node(2, Role::Worker, false)),
            (Anonymous, Caller::Anonymous),
        ];
        for rule in TABLE {
            let path =
                if rule.path.ends_with('/') { format!("{}Run", rule.path) } else { rule.path.to_string() };
            for (who, caller) in &callers {
                let result = decide(&path, caller);
                assert_eq!(result.is_ok(), rule.allowed.contains(who), "{path} for {who:?}: {result:?}");
                if let Err(status) = result {
                    assert_eq!(reason::of(&status), pb::Reason::NotAuthorized);
                    let expected = if *who == Anonymous {
                        tonic::Code::Unauthenticated
                    } else {
                        tonic::Code::PermissionDenied
                    };
                    assert_eq!(status.code(), expected, "{path} for {who:?}");
                }
            }
            let revoked = decide(&path, &Caller::Revoked { id: 3 }).unwrap_err();
            assert_eq!(revoked.code(), tonic::Code::PermissionDenied);
            let text = revoked.message();
            assert!(text.contains("revoked"), "a removed node is told so: {text}");
        }
        // A demoted voter keeps the raft transport (until it leaves the membership), nothing else.
        let demoted = node(4, Role::Worker, true);
        assert!(decide("/weft.v1.RaftTransport/Stream", &demoted).is_ok());
        assert!(decide("/weft.v1.Cluster/Token", &demoted).is_err());
        assert!(decide("/weft.v1.Cluster/Nope", &Caller::Local).is_err(), "unknown methods are refused");
        assert!(decide("/weft.v1.Agent/", &Caller::Local).is_err());
        let message = decide("/weft.v1.Cluster/Token", &node(2, Role::Worker, false)).unwrap_err();
        let text = message.message();
        assert!(text.contains("Token is for"), "the refusal names the call: {text}");
    }

    #[test]
    fn heartbeats_are_for_oneself_unless_a_manager_forwards_them() {
        assert!(node(2, Role::Worker, false).may_speak_for(2));
        assert!(!node(2, Role::Worker, false).may_speak_for(1));
        assert!(node(1, Role::Manager, true).may_speak_for(2));
        assert!(Caller::Local.may_speak_for(2));
        assert!(!Caller::Admin { name: "a".into() }.may_speak_for(2));
    }

    #[test]
    fn commands_are_checked_by_kind_and_owner() {
        use weft_state::cmd;
        let mut state = State::new();
        state.apply(&cmd::register_node(1, "m", "192.0.2.1", Role::Manager, 0)).unwrap();
        state.apply(&cmd::register_node(2, "w", "192.0.2.2", Role::Worker, 0)).unwrap();
        state.apply(&cmd::create_network("n", weft_state::Driver::Overlay, &["10.1.0.0/16"], 0, 0)).unwrap();
        let ep = |state: &mut State, node| match state
            .apply(&cmd::allocate_endpoint("n", node, &format!("c{node}"), "", ""))
            .unwrap()
            .outcome
        {
            weft_state::Outcome::Endpoint(e) => e.id,
            other => panic!("{other:?}"),
        };
        let (mine, theirs) = (ep(&mut state, 2), ep(&mut state, 1));
        let worker = node(2, Role::Worker, false);
        let manager = node(1, Role::Manager, true);
        let admin = Caller::Admin { name: "a".into() };
        let owner = |id| state.endpoint(id).map(|e| e.node);
        let ok = |c: &Caller, command: pb::Command| super::command(c, &command, owner).is_ok();
        assert!(ok(&worker, cmd::allocate_endpoint("n", 2, "x", "", "")));
        assert!(!ok(&worker, cmd::allocate_endpoint("n", 1, "x", "", "")));
        assert!(ok(&manager, cmd::allocate_endpoint("n", 2, "x", "", "")));
        assert!(ok(&worker, cmd::release_endpoint(mine)));
        assert!(!ok(&worker, cmd::release_endpoint(theirs)));
        assert!(ok(&admin, cmd::release_endpoint(theirs)));
        assert!(!ok(&worker, cmd::create_network("m", weft_state::Driver::Overlay, &[], 0, 0)));
        assert!(!ok(&worker, cmd::delete_network("n")));
        assert!(ok(&admin, cmd::create_network("m", weft_state::Driver::Overlay, &[], 0, 0)));
        for leader_only in [
            cmd::expire_node(2, u64::MAX, 0),
            cmd::set_node_status(1, weft_state::Status::Down, 0),
            cmd::register_node(9, "x", "192.0.2.9", Role::Manager, 0),
            cmd::remove_node(1),
            cmd::set_node_role(2, Role::Manager),
            cmd::rotate_join_token(Role::Manager),
        ] {
            for caller in [&worker, &manager, &admin, &Caller::Local] {
                assert!(!ok(caller, leader_only.clone()), "{leader_only:?} from {caller:?}");
            }
        }
    }

    /// The README's table names every row: a row added here without documenting it fails.
    #[test]
    fn the_readme_documents_every_row() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("### Who may do what").nth(1).expect("the README's authorization section");
        for rule in TABLE {
            let method = rule.path.rsplit('/').find(|m| !m.is_empty()).unwrap();
            assert!(
                section.contains(&format!("`{method}`")) || section.contains(rule.path),
                "{} is not in the README's table",
                rule.path
            );
        }
    }
}
