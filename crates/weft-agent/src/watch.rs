//! A worker's Watch client: it asks a manager for everything after the revision it has, applies
//! the stream to its mirror, and on any break (manager restarted, link cut, stream out of order)
//! moves to the next manager and resumes from its own revision: no gap, no event twice.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use weft_proto::v1 as pb;
use weft_state::Mirror;

use crate::peers::Peers;
use crate::service::Upstream;

/// The managers (id, API address) in a mirror.
pub fn managers_of(mirror: &Mirror) -> Vec<(u64, String)> {
    mirror
        .nodes()
        .filter(|n| n.role == pb::NodeRole::Manager as i32 && !n.api_addr.is_empty())
        .map(|n| (n.id, n.api_addr.clone()))
        .collect()
}

/// Runs until `mirror` has no receivers left. `observe` sees every message as it arrives (tests
/// use it to check ordering; the agent passes a no-op).
pub async fn run_watch(
    peers: Arc<Peers>,
    upstream: Arc<Upstream>,
    mirror: watch::Sender<Arc<Mirror>>,
    mut observe: impl FnMut(&pb::WatchResponse) + Send,
) {
    let mut local: Mirror = (**mirror.borrow()).clone();
    loop {
        if mirror.is_closed() {
            return;
        }
        let Some(addr) = upstream.current() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let from = local.revision();
        let stream = match peers.cluster(&addr) {
            Ok(mut client) => client.watch(pb::WatchRequest { from_revision: from }).await,
            Err(e) => Err(e),
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(manager = %addr, error = %e, "watch failed; trying the next manager");
                upstream.failed();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tracing::info!(manager = %addr, from, "watching");
        // Messages that arrive together are applied together and published once: the mirror is
        // cloned per burst, not per event.
        loop {
            let mut item = tokio::select! {
                item = stream.next() => item,
                _ = mirror.closed() => return,
            };
            let (mut applied, mut nodes_changed, mut broken) = (false, false, false);
            loop {
                let Some(Ok(response)) = item else {
                    broken = true;
                    break;
                };
                observe(&response);
                match &response.kind {
                    Some(pb::watch_response::Kind::Snapshot(s)) => {
                        local = Mirror::from_snapshot(s);
                        nodes_changed = true;
                    }
                    Some(pb::watch_response::Kind::Batch(b)) => {
                        if let Err(e) = local.apply(b) {
                            tracing::warn!(error = %e, "watch stream out of order; resuming");
                            broken = true;
                            break;
                        }
                        nodes_changed |= b.events.iter().any(|e| {
                            matches!(
                                e.kind,
                                Some(pb::event::Kind::NodePut(_) | pb::event::Kind::NodeDeleted(_))
                            )
                        });
                    }
                    None => {}
                }
                applied = true;
                match stream.next().now_or_never() {
                    Some(next) => item = next,
                    None => break,
                }
            }
            if nodes_changed {
                upstream.update(managers_of(&local).into_iter().map(|(_, a)| a).collect());
            }
            if applied {
                mirror.send_replace(Arc::new(local.clone()));
            }
            if broken {
                break;
            }
        }
        upstream.failed();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
