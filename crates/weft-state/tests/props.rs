//! Property tests: random command sequences never hand out an address or a block twice, every
//! released address can be taken again, apply never panics, refused commands change nothing, and
//! snapshots round-trip byte for byte. Plus fuzzing of decoding and applying arbitrary commands.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use weft_state::{Driver, Role, State, Status, cmd, pb};

const SUBNETS: &[&str] = &["10.0.0.0/28", "10.0.0.0/24", "10.1.0.0/26", "fd00::/124", "10.2.0.0/16"];
const REQUESTS: &[&str] =
    &["", "", "", "10.0.0.2", "10.0.0.6", "10.1.0.5", "10.0.0.1", "fd00::3", "10.2.3.4"];

#[derive(Debug, Clone)]
enum Op {
    Register(u64),
    Down(u64, u64),
    Up(u64, u64),
    Expire(u64, u64),
    Remove(u64),
    Create(usize, usize, u32),
    Delete(usize),
    Alloc(usize, u64, u8, usize),
    Release(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u64..6).prop_map(Op::Register),
        1 => (1u64..6, 0u64..50).prop_map(|(n, t)| Op::Down(n, t)),
        1 => (1u64..6, 0u64..50).prop_map(|(n, t)| Op::Up(n, t)),
        1 => (1u64..6, 0u64..100).prop_map(|(n, t)| Op::Expire(n, t)),
        1 => (1u64..6).prop_map(Op::Remove),
        2 => (0usize..3, 0..SUBNETS.len(), prop_oneof![Just(0u32), Just(30), Just(26), Just(126)])
            .prop_map(|(k, s, b)| Op::Create(k, s, b)),
        1 => (0usize..3).prop_map(Op::Delete),
        10 => (0usize..3, 1u64..6, 0u8..40, 0..REQUESTS.len()).prop_map(|(k, n, c, r)| Op::Alloc(k, n, c, r)),
        4 => (1u64..80).prop_map(Op::Release),
    ]
}

fn command(op: &Op) -> pb::Command {
    match op {
        Op::Register(n) => {
            cmd::register_node(*n, &format!("h{n}"), &format!("198.51.100.{n}"), Role::Worker, 0)
        }
        Op::Down(n, t) => cmd::set_node_status(*n, Status::Down, *t),
        Op::Up(n, t) => cmd::set_node_status(*n, Status::Ready, *t),
        Op::Expire(n, t) => cmd::expire_node(*n, *t, 20),
        Op::Remove(n) => cmd::remove_node(*n),
        Op::Create(k, s, b) => {
            cmd::create_network(&format!("net{k}"), Driver::Overlay, &[SUBNETS[*s]], 0, *b)
        }
        Op::Delete(k) => cmd::delete_network(&format!("net{k}")),
        Op::Alloc(k, n, c, r) => {
            cmd::allocate_endpoint(&format!("net{k}"), *n, &format!("c{c}"), "", REQUESTS[*r])
        }
        Op::Release(id) => cmd::release_endpoint(*id),
    }
}

/// Checks every ownership invariant through the public API.
fn check_invariants(s: &State) -> Result<(), TestCaseError> {
    for net in s.networks() {
        let blocks = s.blocks(net.id);
        let mut cidrs = BTreeSet::new();
        for b in &blocks {
            prop_assert!(cidrs.insert(b.cidr), "block {} leased twice", b.cidr);
            prop_assert!(s.node(b.node).is_some(), "block {} held by a missing node", b.cidr);
            prop_assert!(net.subnets.iter().any(|sub| sub.contains(b.cidr.addr())));
        }
        for (i, b) in blocks.iter().enumerate() {
            for other in &blocks[i + 1..] {
                prop_assert!(!b.cidr.overlaps(&other.cidr), "blocks {} and {} overlap", b.cidr, other.cidr);
            }
        }
        let mut owners = BTreeMap::new();
        for e in s.network_endpoints(net.id) {
            prop_assert_eq!(e.ips.len(), net.subnets.len());
            for ip in &e.ips {
                prop_assert!(owners.insert(*ip, e.id).is_none(), "address {} owned twice", ip);
                let block = blocks.iter().find(|b| b.cidr.contains(*ip));
                prop_assert!(block.is_some_and(|b| b.node == e.node), "{} outside its node's blocks", ip);
                let block = block.unwrap();
                prop_assert!(
                    *ip != block.cidr.addr() && Some(*ip) != block.cidr.nth(1),
                    "{} is reserved",
                    ip
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..150)) {
        let mut s = State::new();
        for op in &ops {
            let before = s.snapshot_bytes();
            let revision = s.revision();
            let released = match op {
                Op::Release(id) => s.endpoint(*id).cloned(),
                _ => None,
            };
            match s.apply(&command(op)) {
                Ok(applied) => {
                    prop_assert_eq!(applied.revision, revision + 1);
                    prop_assert_eq!(s.revision(), revision + 1);
                    prop_assert!(applied.events.iter().all(|e| e.revision == revision + 1));
                }
                Err(_) => {
                    prop_assert_eq!(s.revision(), revision);
                    prop_assert_eq!(s.snapshot_bytes(), before, "refused {:?} changed the state", op);
                }
            }
            check_invariants(&s)?;
            // A released address can be allocated again right away by its node.
            if let Some(e) = released
                && s.endpoint(e.id).is_none() && s.node(e.node).is_some_and(|n| n.status == Status::Ready) {
                    let net = s.network_by_id(e.network).unwrap().name.clone();
                    let mut probe = s.clone();
                    let again = probe.apply(&cmd::allocate_endpoint(&net, e.node, "probe", "", &e.ips[0].to_string()));
                    prop_assert!(again.is_ok(), "released {} could not be taken again: {:?}", e.ips[0], again);
                }
        }
        let bytes = s.snapshot_bytes();
        let restored = State::from_snapshot_bytes(&bytes).unwrap();
        prop_assert_eq!(restored.snapshot_bytes(), bytes);
    }

    /// Arbitrary bytes decoded and applied: never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..40)) {
        let mut s = State::new();
        s.apply(&cmd::register_node(1, "h1", "198.51.100.1", Role::Manager, 0)).unwrap();
        s.apply(&cmd::create_network("app", Driver::Overlay, &["10.0.0.0/24"], 0, 0)).unwrap();
        for bytes in chunks {
            let _ = s.apply_bytes(&bytes);
            check_invariants(&s)?;
        }
        let _ = State::from_snapshot_bytes(&s.snapshot_bytes()).unwrap();
    }

    /// Structurally valid commands with arbitrary field values: never a panic, invariants hold.
    #[test]
    fn arbitrary_field_values_never_panic(cmds in proptest::collection::vec(arbitrary_command(), 1..60)) {
        let mut s = State::new();
        for c in &cmds {
            let _ = s.apply(c);
            check_invariants(&s)?;
        }
        let bytes = s.snapshot_bytes();
        prop_assert_eq!(State::from_snapshot_bytes(&bytes).unwrap().snapshot_bytes(), bytes);
    }

    /// Arbitrary snapshot bytes are refused or accepted, never a panic.
    #[test]
    fn arbitrary_snapshots_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = State::from_snapshot_bytes(&bytes);
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,8}",
        Just("10.0.0.0/8".to_string()),
        Just("10.0.0.0/30".to_string()),
        Just("::/0".to_string()),
        Just("0.0.0.0/0".to_string()),
        Just("198.51.100.1".to_string()),
        Just("10.0.0.2".to_string()),
        ".{0,12}",
    ]
}

fn arbitrary_command() -> impl Strategy<Value = pb::Command> {
    use pb::command::Kind;
    let small = 0u64..4;
    prop_oneof![
        (small.clone(), text(), text(), any::<i32>(), any::<u64>()).prop_map(
            |(id, name, addr, role, now_ms)| {
                Kind::RegisterNode(pb::RegisterNode {
                    id,
                    name,
                    underlay_addr: addr,
                    role,
                    now_ms,
                    api_addr: String::new(),
                    underlay_prefix_len: (id % 40) as u32,
                    underlay_mtu: (id % 3) as u32 * 700,
                })
            }
        ),
        (small.clone(), any::<i32>(), any::<u64>()).prop_map(
            |(node_id, status, now_ms)| Kind::SetNodeStatus(pb::SetNodeStatus { node_id, status, now_ms })
        ),
        (small.clone(), any::<u64>(), any::<u64>()).prop_map(|(node_id, now_ms, ttl_ms)| Kind::ExpireNode(
            pb::ExpireNode { node_id, now_ms, ttl_ms }
        )),
        small.clone().prop_map(|node_id| Kind::RemoveNode(pb::RemoveNode { node_id })),
        (
            text(),
            any::<i32>(),
            proptest::collection::vec(text(), 0..3),
            any::<u32>(),
            0u32..140,
            any::<bool>()
        )
            .prop_map(|(name, driver, subnets, vni, block_len, internal)| {
                Kind::CreateNetwork(pb::CreateNetwork {
                    name,
                    driver,
                    subnets,
                    vni,
                    block_len,
                    internal,
                    labels: vec![],
                })
            }),
        text().prop_map(|name| Kind::DeleteNetwork(pb::DeleteNetwork { name })),
        (text(), small.clone(), text(), text(), proptest::collection::vec(text(), 0..2), text()).prop_map(
            |(network, node_id, container_id, name, aliases, requested_ip)| {
                Kind::AllocateEndpoint(pb::AllocateEndpoint {
                    network,
                    node_id,
                    container_id,
                    name,
                    aliases,
                    requested_ip,
                })
            }
        ),
        (0u64..8).prop_map(|endpoint_id| Kind::ReleaseEndpoint(pb::ReleaseEndpoint { endpoint_id })),
    ]
    .prop_map(|kind| pb::Command { kind: Some(kind) })
}
