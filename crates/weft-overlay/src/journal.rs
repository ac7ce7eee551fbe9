//! What the reconciler did on its own: the drift it repaired (someone deleted an FDB entry, flushed
//! the firewall) and what its last run could not apply. `weft net why` reads it, so a path that
//! was broken and mended meanwhile is reported as such instead of as clear.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::plan::Action;

/// Repairs kept, newest last.
pub const KEPT_REPAIRS: usize = 64;

/// One repair: an action applied on a run that no state change caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Wall clock, ms since the epoch.
    pub at_ms: u64,
    /// The network's VNI (0: not one network's).
    pub vni: u32,
    /// The action's kind ([`Action::kind`], or `firewall`).
    pub kind: &'static str,
    /// The remote host the action was towards, if any.
    pub peer_underlay: Option<IpAddr>,
    /// What was done, in words.
    pub text: String,
}

impl Repair {
    /// The repair that applying `action` at `at_ms` was.
    pub fn of(action: &Action, at_ms: u64) -> Repair {
        let (vni, peer, text) = match action {
            Action::EnsureBridge { vni, .. } => {
                (*vni, None, format!("re-created or corrected bridge of VNI {vni}"))
            }
            Action::EnsureVxlan { vni, .. } => {
                (*vni, None, format!("re-created or corrected the VXLAN device of VNI {vni}"))
            }
            Action::AddAddress { dev, cidr } => (0, None, format!("added {cidr} back to {dev}")),
            Action::DelAddress { dev, cidr } => (0, None, format!("removed {cidr} from {dev}")),
            Action::AddPeerBlock { vni, block, mac, underlay } => (
                *vni,
                Some(*underlay),
                format!(
                    "restored the route to {block}, its neighbour and the FDB entry {mac} dst {underlay}"
                ),
            ),
            Action::DelRoute { vni, dst, .. } => (*vni, None, format!("removed a foreign route to {dst}")),
            Action::DelNeighbour { vni, ip } => (*vni, None, format!("removed a foreign neighbour {ip}")),
            Action::DelFdb { vni, mac, dst } => {
                (*vni, Some(*dst), format!("removed a foreign FDB entry {mac} dst {dst}"))
            }
            Action::DeleteLink { name } => (0, None, format!("deleted a stale device {name}")),
        };
        Repair { at_ms, vni, kind: action.kind(), peer_underlay: peer, text }
    }
}

/// The journal; shared between the reconciler and whoever reports on it.
#[derive(Debug, Default)]
pub struct Journal {
    repairs: VecDeque<Repair>,
    failures: Vec<String>,
}

/// A handle to a reconciler's journal.
pub type SharedJournal = Arc<Mutex<Journal>>;

impl Journal {
    /// Records a repair, forgetting the oldest beyond [`KEPT_REPAIRS`].
    pub fn repaired(&mut self, repair: Repair) {
        if self.repairs.len() == KEPT_REPAIRS {
            self.repairs.pop_front();
        }
        self.repairs.push_back(repair);
    }

    /// Replaces the failures with the last run's.
    pub fn set_failures(&mut self, failures: Vec<String>) {
        self.failures = failures;
    }

    /// The repairs kept, oldest first.
    pub fn repairs(&self) -> impl Iterator<Item = &Repair> {
        self.repairs.iter()
    }

    /// What the last run could not apply.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_ipam::Cidr;
    use weft_net::MacAddr;

    #[test]
    fn a_peer_repair_names_its_peer_and_the_journal_keeps_the_newest() {
        let action = Action::AddPeerBlock {
            vni: 7,
            block: "10.1.1.0/24".parse::<Cidr>().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            underlay: "198.51.100.2".parse().unwrap(),
        };
        let r = Repair::of(&action, 5);
        assert_eq!(
            (r.vni, r.kind, r.peer_underlay),
            (7, "add_peer_block", Some("198.51.100.2".parse().unwrap()))
        );
        assert!(r.text.contains("FDB entry 02:00:00:00:00:01 dst 198.51.100.2"), "{}", r.text);
        let mut j = Journal::default();
        for i in 0..(KEPT_REPAIRS as u64 + 3) {
            j.repaired(Repair::of(&action, i));
        }
        assert_eq!(j.repairs().count(), KEPT_REPAIRS);
        assert_eq!(j.repairs().next().unwrap().at_ms, 3);
    }
}
