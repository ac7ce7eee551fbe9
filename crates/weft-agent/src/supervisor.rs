//! Every background task of weftd runs under one supervisor. A task that ends while it was meant
//! to keep running (it panicked, returned an error, or simply returned) is a failure: the
//! supervisor logs it and reports it, and weftd exits non-zero so that systemd restarts it,
//! instead of running on without its data path loop, its DNS or its raft driver. Shutdown waits
//! for every task it spawned.
//!
//! Fault injection for tests: `WEFTD_FAILPOINT_PANIC=NAME[@MS]` makes the task called NAME panic
//! MS milliseconds (default 300) after it starts, as etcd's failpoints do; nothing else reads it.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// The environment variable naming a task to make panic (tests only).
pub const FAILPOINT_PANIC: &str = "WEFTD_FAILPOINT_PANIC";

/// A task that stopped when it should not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// The task's name.
    pub task: &'static str,
    /// What happened: the panic's message, the error, or that it returned.
    pub reason: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "background task {:?} stopped: {}", self.task, self.reason)
    }
}

/// Tasks that stopped when they should not have, in the order they were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures(pub Vec<TaskFailure>);

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(|t| t.to_string()).collect();
        write!(f, "{}", all.join("; "))
    }
}

/// What a task's output says about how it ended.
pub trait Outcome {
    /// `Err(reason)` when the task failed.
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A task under the supervisor, for an owner that stops it itself or waits for it.
pub struct Supervised {
    abort: AbortHandle,
    done: watch::Receiver<bool>,
}

impl Supervised {
    /// Stops the task now (not a failure).
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Waits until the task has ended.
    pub async fn finished(mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }
}

/// The supervisor: spawns named tasks, reports the first one that fails, joins them all.
pub struct Supervisor {
    failures: mpsc::UnboundedSender<TaskFailure>,
    failed: Mutex<Option<mpsc::UnboundedReceiver<TaskFailure>>>,
    handles: Mutex<Vec<(&'static str, watch::Receiver<bool>)>>,
    failpoint: Option<String>,
}

impl Default for Supervisor {
    fn default() -> Supervisor {
        Supervisor::new()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

impl Supervisor {
    /// A supervisor with no tasks yet.
    pub fn new() -> Supervisor {
        let (failures, failed) = mpsc::unbounded_channel();
        Supervisor {
            failures,
            failed: Mutex::new(Some(failed)),
            handles: Mutex::new(Vec::new()),
            failpoint: std::env::var(FAILPOINT_PANIC).ok(),
        }
    }

    /// Runs `task` until it ends. Ending is fine once `stop` says so (shutdown, a role change);
    /// before that, ending in any way is a failure.
    pub fn spawn<F>(&self, name: &'static str, stop: watch::Receiver<bool>, task: F) -> Supervised
    where
        F: Future + Send + 'static,
        F::Output: Outcome + Send,
    {
        let inject = self.failpoint.as_deref().and_then(|f| {
            let (task, delay) = f.split_once('@').unwrap_or((f, "300"));
            (task == name).then(|| Duration::from_millis(delay.parse().unwrap_or(300)))
        });
        let inner = tokio::spawn(async move {
            if let Some(delay) = inject {
                tokio::time::sleep(delay).await;
                panic!("failpoint {FAILPOINT_PANIC}={name}");
            }
            task.await.into_result()
        });
        let abort = inner.abort_handle();
        let failures = self.failures.clone();
        let (done_tx, done) = watch::channel(false);
        tokio::spawn(async move {
            let _done = DoneOnDrop(done_tx);
            let reason = match inner.await {
                Ok(Ok(())) => "it returned".to_string(),
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(&*e.into_panic())),
                Err(_) => return, // aborted by its owner
            };
            if *stop.borrow() {
                return;
            }
            let failure = TaskFailure { task: name, reason };
            tracing::error!(task = name, reason = %failure.reason, "background task stopped; weftd exits");
            let _ = failures.send(failure);
        });
        if let Ok(mut handles) = self.handles.lock() {
            handles.retain(|(_, d)| !*d.borrow());
            handles.push((name, done.clone()));
        }
        Supervised { abort, done }
    }

    /// Watches a task that runs on a thread of its own (the raft driver): `ended` turns `Some`
    /// with how it ended; ending before `stop` says so is a failure.
    pub fn watch_thread(
        &self,
        name: &'static str,
        stop: watch::Receiver<bool>,
        mut ended: watch::Receiver<Option<String>>,
    ) -> Supervised {
        self.spawn(name, stop, async move {
            let how = match ended.wait_for(|e| e.is_some()).await {
                Ok(how) => how.clone().unwrap_or_default(),
                Err(_) => "its handle was dropped".into(),
            };
            Err::<(), String>(how)
        })
    }

    /// The first failure, once there is one, with the others that follow within 50 ms (a task
    /// that dies often takes the tasks fed by it along: all of them are named, the first first).
    /// Pending forever when this was asked before.
    pub async fn failed(&self) -> Failures {
        let receiver = self.failed.lock().ok().and_then(|mut r| r.take());
        let Some(mut receiver) = receiver else { return std::future::pending().await };
        let Some(first) = receiver.recv().await else { return std::future::pending().await };
        let mut all = vec![first];
        let window = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                next = receiver.recv() => match next {
                    Some(failure) => all.push(failure),
                    None => break,
                },
            }
        }
        Failures(all)
    }

    /// Waits up to `timeout` for every task spawned so far to end (after shutdown was signalled);
    /// names the ones that did not.
    pub async fn join(&self, timeout: Duration) -> Vec<&'static str> {
        let handles: Vec<_> = self.handles.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut late = Vec::new();
        for (name, mut done) in handles {
            if tokio::time::timeout_at(deadline, done.wait_for(|d| *d)).await.is_err() {
                late.push(name);
            }
        }
        late
    }
}

/// Marks a task done however its watcher ends.
struct DoneOnDrop(watch::Sender<bool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_returns_early_is_reported_and_a_stopped_one_is_not() {
        let supervisor = Supervisor::new();
        let (stop_tx, stop) = watch::channel(false);
        let sleeper = supervisor
            .spawn("sleeper", stop.clone(), async { tokio::time::sleep(Duration::from_secs(60)).await });
        supervisor.spawn("bad", stop.clone(), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if std::hint::black_box(true) {
                panic!("boom");
            }
        });
        let failures = tokio::time::timeout(Duration::from_secs(1), supervisor.failed()).await.unwrap();
        let failure = &failures.0[0];
        assert_eq!(failure.task, "bad");
        assert!(failure.reason.contains("boom"), "{failure}");
        // An aborted task is its owner's business, not a failure.
        sleeper.abort();
        sleeper.finished().await;

        let other = Supervisor::new();
        other.spawn("erring", stop.clone(), async { Err::<(), String>("no socket".into()) });
        let failures = tokio::time::timeout(Duration::from_secs(1), other.failed()).await.unwrap();
        assert_eq!(failures.0[0].reason, "no socket");

        // After stop, ending is expected: nothing is reported, and join returns.
        let calm = Supervisor::new();
        let (calm_tx, calm_stop) = watch::channel(false);
        let mut s = calm_stop.clone();
        calm.spawn("stops", calm_stop, async move {
            let _ = s.wait_for(|v| *v).await;
        });
        calm_tx.send(true).unwrap();
        assert!(calm.join(Duration::from_secs(1)).await.is_empty());
        assert!(tokio::time::timeout(Duration::from_millis(100), calm.failed()).await.is_err());
        drop(stop_tx);
    }
}
