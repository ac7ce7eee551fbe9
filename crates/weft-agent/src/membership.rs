//! Which raft members the cluster should have, and the one change that moves it closer: every
//! manager in the state is a member; an odd number of them vote (with an even number of managers
//! the newest non-leader one is a learner); new managers join as learners and are promoted once
//! they have caught up; workers and removed nodes leave. Pure; the leader applies one change at
//! a time (raft-rs's simple conf changes).

use std::collections::BTreeSet;

use weft_raft::Membership;

/// The raft configuration and progress as the leader sees it.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// The leader's id.
    pub leader: u64,
    /// Voters.
    pub voters: BTreeSet<u64>,
    /// Learners.
    pub learners: BTreeSet<u64>,
    /// Learners close enough to the log's end to vote.
    pub caught_up: BTreeSet<u64>,
}

/// The voters a set of managers should have: all of them when odd, else all but the newest
/// (highest id) that is not the leader.
pub fn desired_voters(managers: &BTreeSet<u64>, leader: u64) -> BTreeSet<u64> {
    let mut voters = managers.clone();
    if voters.len().is_multiple_of(2)
        && let Some(spare) = voters.iter().rev().find(|id| **id != leader).copied()
    {
        voters.remove(&spare);
    }
    voters
}

/// The next change, if any.
pub fn next_change(managers: &BTreeSet<u64>, members: &Members) -> Option<Membership> {
    let want = desired_voters(managers, members.leader);
    // New managers start as learners.
    if let Some(id) =
        managers.iter().find(|id| !members.voters.contains(id) && !members.learners.contains(id))
    {
        return Some(Membership::AddLearner(*id));
    }
    // Members that are no longer managers leave; learners first, never the leader itself.
    if let Some(id) = members.learners.iter().find(|id| !managers.contains(id)) {
        return Some(Membership::Remove(*id));
    }
    if let Some(id) = members.voters.iter().find(|id| !managers.contains(id) && **id != members.leader) {
        return Some(Membership::Remove(*id));
    }
    // Caught-up learners that should vote are promoted.
    if let Some(id) = members.learners.iter().find(|id| want.contains(id) && members.caught_up.contains(id)) {
        return Some(Membership::AddVoter(*id));
    }
    // A voter that should be a spare leaves (and comes back as a learner on the next round),
    // but only while that keeps a majority of the wanted voters.
    if members.voters.len() > want.len()
        && let Some(id) = members.voters.iter().find(|id| !want.contains(id) && **id != members.leader)
    {
        return Some(Membership::Remove(*id));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// Applies changes until none is left, as the leader's loop does; returns the final members.
    fn settle(managers: &[u64], mut m: Members) -> (Members, usize) {
        let managers = set(managers);
        let mut steps = 0;
        while let Some(change) = next_change(&managers, &m) {
            steps += 1;
            assert!(steps < 20, "no fixpoint: {m:?}");
            match change {
                Membership::AddLearner(id) => {
                    m.learners.insert(id);
                    m.caught_up.insert(id);
                }
                Membership::AddVoter(id) => {
                    m.learners.remove(&id);
                    m.voters.insert(id);
                }
                Membership::Remove(id) => {
                    m.learners.remove(&id);
                    m.voters.remove(&id);
                }
            }
            assert!(m.voters.contains(&m.leader), "the leader never loses its vote");
        }
        (m, steps)
    }

    #[test]
    fn voters_stay_odd_as_managers_come_and_go() {
        let one = Members { leader: 1, voters: set(&[1]), ..Members::default() };
        let (two, _) = settle(&[1, 2], one);
        assert_eq!((two.voters.clone(), two.learners.clone()), (set(&[1]), set(&[2])));
        let (three, _) = settle(&[1, 2, 3], two);
        assert_eq!((three.voters.clone(), three.learners.clone()), (set(&[1, 2, 3]), set(&[])));
        let (four, _) = settle(&[1, 2, 3, 4], three.clone());
        assert_eq!((four.voters.clone(), four.learners.clone()), (set(&[1, 2, 3]), set(&[4])));
        // Demoting manager 2 of three leaves two managers: one votes, the other is a spare.
        let (demoted, _) = settle(&[1, 3], three);
        assert_eq!(demoted.voters.len() % 2, 1);
        assert_eq!(demoted.voters.len() + demoted.learners.len(), 2);
        assert!(!demoted.voters.contains(&2) && !demoted.learners.contains(&2));
    }

    #[test]
    fn a_learner_votes_only_once_caught_up() {
        let m = Members { leader: 1, voters: set(&[1]), learners: set(&[2, 3]), caught_up: set(&[2]) };
        assert_eq!(next_change(&set(&[1, 2, 3]), &m), Some(Membership::AddVoter(2)));
        let m = Members { caught_up: set(&[]), ..m };
        assert_eq!(next_change(&set(&[1, 2, 3]), &m), None);
    }
}
