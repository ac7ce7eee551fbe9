//! What a raft message from a peer must be before raft-rs sees it. raft-rs trusts its peers: a
//! message it cannot reconcile with its log (a commit index past the end, entries that do not
//! line up, a local-only message type) ends in `fatal!`, a panic that stops the driver, and a
//! snapshot is persisted before weft-state decodes it. A manager's certificate is not a licence to
//! do that, so every inbound message is checked here first, against the receiver's own view, and
//! refused (and counted) when it could only come from a broken or hostile peer.
//!
//! Pure: [`admit`] reads a [`View`] of the receiver and the message, nothing else.

use std::sync::atomic::{AtomicU64, Ordering};

use raft::eraftpb::{EntryType, Message, MessageType};

/// Why a message was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `from` is not the node the sender's certificate names.
    WrongSender,
    /// `from` is not a voter or learner of this node's configuration.
    NotMember,
    /// `to` is not this node.
    NotForMe,
    /// A message type raft-rs only makes locally (MsgHup, MsgBeat, ...), or an empty proposal.
    LocalOnly,
    /// An index or commit this node's log cannot hold (a heartbeat committing past the log's
    /// end, entries that do not follow the message's index).
    OutOfRange,
    /// A snapshot whose data is not a weft state, or whose configuration lacks its sender.
    BadSnapshot,
    /// A forwarded proposal carrying a configuration change (only the leader makes those).
    ConfChange,
    /// Bytes that do not decode as a raft message (counted by the transport).
    Garbled,
}

impl Refusal {
    /// Every reason, in the order of the counters.
    pub const ALL: [Refusal; 8] = [
        Refusal::WrongSender,
        Refusal::NotMember,
        Refusal::NotForMe,
        Refusal::LocalOnly,
        Refusal::OutOfRange,
        Refusal::BadSnapshot,
        Refusal::ConfChange,
        Refusal::Garbled,
    ];

    /// The label metrics use.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::WrongSender => "wrong_sender",
            Refusal::NotMember => "not_member",
            Refusal::NotForMe => "not_for_me",
            Refusal::LocalOnly => "local_only",
            Refusal::OutOfRange => "out_of_range",
            Refusal::BadSnapshot => "bad_snapshot",
            Refusal::ConfChange => "conf_change",
            Refusal::Garbled => "garbled",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The receiver's side of the check, read on the driver thread right before stepping.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// This node.
    pub id: u64,
    /// Voters and learners of its configuration; empty while it has not learnt one (a manager
    /// that has just joined and waits for its first snapshot).
    pub members: Vec<u64>,
    /// The last index of its log.
    pub last_index: u64,
}

/// Checks one message that arrived from the peer whose certificate names node `sender`.
/// `snapshot_ok` decides whether a snapshot's data is a state this node could install.
pub fn admit(
    view: &View,
    sender: u64,
    m: &Message,
    snapshot_ok: impl Fn(&[u8]) -> bool,
) -> Result<(), Refusal> {
    use MessageType::*;
    if m.from != sender || m.from == 0 || m.from == view.id {
        return Err(Refusal::WrongSender);
    }
    if m.to != view.id {
        return Err(Refusal::NotForMe);
    }
    if !view.members.is_empty() && !view.members.contains(&m.from) {
        return Err(Refusal::NotMember);
    }
    match m.get_msg_type() {
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => Err(Refusal::LocalOnly),
        MsgPropose => {
            if m.entries.is_empty() {
                return Err(Refusal::LocalOnly);
            }
            if m.entries.iter().any(|e| e.get_entry_type() != EntryType::EntryNormal) {
                return Err(Refusal::ConfChange);
            }
            Ok(())
        }
        MsgHeartbeat if m.commit > view.last_index => Err(Refusal::OutOfRange),
        MsgAppend => {
            let follows =
                m.entries.iter().enumerate().all(|(i, e)| {
                    e.index == m.index + 1 + i as u64 && e.term <= m.term && e.term >= m.log_term
                });
            if follows { Ok(()) } else { Err(Refusal::OutOfRange) }
        }
        MsgSnapshot => {
            let snapshot = m.get_snapshot();
            let meta = snapshot.get_metadata();
            let conf = meta.get_conf_state();
            let names_sender = conf.voters.contains(&m.from) || conf.voters_outgoing.contains(&m.from);
            if meta.index == 0 || !names_sender || !snapshot_ok(snapshot.get_data()) {
                return Err(Refusal::BadSnapshot);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Counts refused messages by reason; shared between the driver and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    /// Counts one refusal.
    pub fn count(&self, reason: Refusal) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason with its count.
    pub fn snapshot(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL.iter().map(|r| (*r, self.counts[r.index()].load(Ordering::Relaxed))).collect()
    }

    /// The sum over every reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{ConfState, Entry, Snapshot};

    use super::*;

    fn view() -> View {
        View { id: 1, members: vec![1, 2, 3], last_index: 10 }
    }

    fn message(kind: MessageType, from: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = from;
        m.to = 1;
        m.term = 3;
        m
    }

    fn admit_ok(m: &Message) -> Result<(), Refusal> {
        admit(&view(), m.from, m, |_| true)
    }

    #[test]
    fn the_sender_must_be_the_certificates_node_and_a_member() {
        let m = message(MessageType::MsgHeartbeat, 2);
        assert_eq!(admit(&view(), 2, &m, |_| true), Ok(()));
        assert_eq!(admit(&view(), 3, &m, |_| true), Err(Refusal::WrongSender));
        let me = message(MessageType::MsgHeartbeat, 1);
        assert_eq!(admit(&view(), 1, &me, |_| true), Err(Refusal::WrongSender));
        let stranger = message(MessageType::MsgHeartbeat, 9);
        assert_eq!(admit(&view(), 9, &stranger, |_| true), Err(Refusal::NotMember));
        // A node that knows no configuration yet (just joined) hears from any manager.
        let fresh = View { id: 1, members: vec![], last_index: 0 };
        assert_eq!(admit(&fresh, 9, &stranger, |_| true), Ok(()));
        let mut elsewhere = message(MessageType::MsgHeartbeat, 2);
        elsewhere.to = 3;
        assert_eq!(admit_ok(&elsewhere), Err(Refusal::NotForMe));
    }

    #[test]
    fn local_only_types_and_empty_or_conf_proposals_are_refused() {
        for kind in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
        ] {
            assert_eq!(admit_ok(&message(kind, 2)), Err(Refusal::LocalOnly), "{kind:?}");
        }
        assert_eq!(admit_ok(&message(MessageType::MsgRequestPreVoteResponse, 2)), Ok(()));
        let empty = message(MessageType::MsgPropose, 2);
        assert_eq!(admit_ok(&empty), Err(Refusal::LocalOnly));
        let mut normal = message(MessageType::MsgPropose, 2);
        normal.entries.push(Entry { data: b"x".to_vec().into(), ..Default::default() });
        assert_eq!(admit_ok(&normal), Ok(()));
        let mut conf = normal.clone();
        conf.entries[0].set_entry_type(EntryType::EntryConfChange);
        assert_eq!(admit_ok(&conf), Err(Refusal::ConfChange));
    }

    #[test]
    fn a_commit_past_the_log_or_entries_out_of_line_are_refused() {
        let mut beat = message(MessageType::MsgHeartbeat, 2);
        beat.commit = 10;
        assert_eq!(admit_ok(&beat), Ok(()));
        beat.commit = 1 << 40;
        assert_eq!(admit_ok(&beat), Err(Refusal::OutOfRange));
        let mut append = message(MessageType::MsgAppend, 2);
        append.index = 10;
        append.log_term = 2;
        for (index, term) in [(11, 2), (12, 3)] {
            append.entries.push(Entry { index, term, ..Default::default() });
        }
        assert_eq!(admit_ok(&append), Ok(()));
        let mut gap = append.clone();
        gap.entries[1].index = 14;
        assert_eq!(admit_ok(&gap), Err(Refusal::OutOfRange));
        let mut future = append.clone();
        future.entries[1].term = 9;
        assert_eq!(admit_ok(&future), Err(Refusal::OutOfRange));
    }

    #[test]
    fn a_snapshot_must_decode_and_name_its_sender() {
        let snapshot = |voters: Vec<u64>, index: u64| {
            let mut s = Snapshot::default();
            s.mut_metadata().index = index;
            s.mut_metadata().set_conf_state(ConfState { voters, ..Default::default() });
            s.set_data(b"state".to_vec().into());
            s
        };
        let mut m = message(MessageType::MsgSnapshot, 2);
        m.set_snapshot(snapshot(vec![1, 2], 20));
        assert_eq!(admit(&view(), 2, &m, |d| d == b"state"), Ok(()));
        assert_eq!(admit(&view(), 2, &m, |_| false), Err(Refusal::BadSnapshot));
        m.set_snapshot(snapshot(vec![1, 3], 20));
        assert_eq!(admit_ok(&m), Err(Refusal::BadSnapshot));
        m.set_snapshot(snapshot(vec![1, 2], 0));
        assert_eq!(admit_ok(&m), Err(Refusal::BadSnapshot));
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let counts = Refusals::default();
        counts.count(Refusal::OutOfRange);
        counts.count(Refusal::OutOfRange);
        counts.count(Refusal::WrongSender);
        assert_eq!(counts.total(), 3);
        let by_reason: std::collections::HashMap<_, _> = counts.snapshot().into_iter().collect();
        assert_eq!(by_reason[&Refusal::OutOfRange], 2);
        assert_eq!(by_reason[&Refusal::BadSnapshot], 0);
    }
}
