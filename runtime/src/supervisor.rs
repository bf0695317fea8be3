//! Owns every background task of a process. Loops and listeners are
//! spawned here instead of with a bare `tokio::spawn`, so that:
//!
//! - shutdown (a signal, or one task dying) stops them all together, each
//!   finishing the pass it is in, within a grace period;
//! - a periodic loop runs each pass as its own task, so a panic costs one
//!   pass (recorded on `/healthz`), not the loop;
//! - a long-running task (a listener, a controller pacing itself) that ends
//!   before shutdown brings the process down with its reason, instead of
//!   leaving a service with a hole in it running.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::liveness::Liveness;

/// A handle tasks watch to learn that the process is stopping.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Resolves once shutdown has been requested.
    pub async fn requested(&self) {
        self.0.cancelled().await
    }

    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    pub fn request(&self) {
        self.0.cancel()
    }
}

type Transient = (&'static str, Pin<Box<dyn Future<Output = ()> + Send>>);

pub struct Supervisor {
    tasks: JoinSet<Result<(), String>>,
    names: HashMap<tokio::task::Id, &'static str>,
    /// Tasks added through a [`Spawner`]: their end is normal.
    transient: HashSet<tokio::task::Id>,
    incoming: mpsc::UnboundedReceiver<Transient>,
    spawner: Spawner,
    shutdown: Shutdown,
    liveness: Arc<Liveness>,
}

/// Adds tasks to a supervisor, also while it runs: work that comes and goes
/// (a resync session per syncing chain member) but must still belong to
/// the process, be dropped at shutdown and be waited for. Such a task
/// ending is normal, not a reason to stop.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::UnboundedSender<Transient>,
    shutdown: Shutdown,
}

impl Spawner {
    /// Hands `task` to the supervisor; false (and the task dropped) once
    /// the process is stopping.
    pub fn spawn(
        &self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        !self.shutdown.is_requested() && self.tx.send((name, Box::pin(task))).is_ok()
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

impl Supervisor {
    /// A supervisor reporting its loops to `liveness`.
    pub fn new(liveness: Arc<Liveness>) -> Self {
        let shutdown = Shutdown::default();
        let (tx, incoming) = mpsc::unbounded_channel();
        Supervisor {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            transient: HashSet::new(),
            incoming,
            spawner: Spawner {
                tx,
                shutdown: shutdown.clone(),
            },
            shutdown,
            liveness,
        }
    }

    /// A handle that adds tasks to this supervisor, before or while it runs.
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// Runs `pass` at once and then every `period` (counted from the end of
    /// the previous pass) until shutdown, recording each outcome on
    /// `/healthz`.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.periodic(name, period, false, pass);
    }

    /// As [`Supervisor::every`], but the first pass too waits a period:
    /// for work that should not run at start (a data node's scrub, which
    /// would compete with the resync a restart brings).
    pub fn every_after<F, Fut>(&mut self, name: &'static str, period: Duration, pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.periodic(name, period, true, pass);
    }

    fn periodic<F, Fut>(&mut self, name: &'static str, period: Duration, wait: bool, mut pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.liveness.register(name, period);
        let liveness = self.liveness.clone();
        let shutdown = self.shutdown.clone();
        self.spawn(name, async move {
            let mut wait = wait;
            loop {
                if std::mem::replace(&mut wait, true) {
                    tokio::select! {
                        _ = shutdown.requested() => return Ok(()),
                        _ = tokio::time::sleep(period) => {}
                    }
                }
                if shutdown.is_requested() {
                    return Ok(());
                }
                // Its own task: a panic inside is one failed pass. Aborted
                // with the loop if shutdown outlasts the grace period.
                let started = std::time::Instant::now();
                let pass = AbortOnDropHandle::new(tokio::spawn(pass()));
                let outcome = match pass.await {
                    Ok(r) => r,
                    Err(e) => Err(format!("pass panicked: {}", panic_message(e))),
                };
                if let Err(e) = &outcome {
                    tracing::warn!(task = name, error = %e, "pass failed");
                }
                liveness.pass_took(name, outcome, started.elapsed());
            }
        });
    }

    /// Runs `task` until it ends or shutdown is requested (then it is
    /// dropped at its next await). A task that ends first, with or without
    /// an error, stops the process.
    pub fn spawn<Fut>(&mut self, name: &'static str, task: Fut)
    where
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.spawn_until(name, |shutdown| async move {
            tokio::select! {
                r = task => r,
                _ = shutdown.requested() => Ok(()),
            }
        });
    }

    /// Runs a task that watches shutdown itself and returns once it has
    /// finished what it was doing (a controller completing its pass, a
    /// listener draining its connections), within the grace period of
    /// [`Supervisor::run`].
    pub fn spawn_until<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let handle = self.tasks.spawn(task(self.shutdown.clone()));
        self.names.insert(handle.id(), name);
    }

    /// Requests shutdown on SIGTERM or Ctrl-C.
    pub fn stop_on_signals(&mut self) {
        let shutdown = self.shutdown.clone();
        self.spawn("signals", async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            shutdown.request();
            Ok(())
        });
    }

    /// Waits until shutdown is requested or a task ends on its own, then
    /// gives every task `grace` to finish and aborts the rest. Returns the
    /// reason when a task failed or ended early.
    pub async fn run(mut self, grace: Duration) -> Result<(), String> {
        let mut failure = None;
        while !self.shutdown.is_requested() {
            tokio::select! {
                _ = self.shutdown.requested() => {}
                Some((name, task)) = self.incoming.recv() => {
                    let shutdown = self.shutdown.clone();
                    let handle = self.tasks.spawn(async move {
                        tokio::select! {
                            _ = task => {}
                            _ = shutdown.requested() => {}
                        }
                        Ok(())
                    });
                    self.names.insert(handle.id(), name);
                    self.transient.insert(handle.id());
                }
                Some(ended) = self.tasks.join_next_with_id() => {
                    if self.shutdown.is_requested() {
                        break;
                    }
                    let id = match &ended {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    if self.transient.remove(&id) {
                        let name = self.names.remove(&id).unwrap_or("task");
                        if let Err(e) = ended {
                            tracing::warn!(task = name, reason = %panic_message(e), "a transient task failed");
                        }
                        continue;
                    }
                    let (name, why) = match ended {
                        Ok((id, Ok(()))) => (self.name(id), "ended".to_string()),
                        Ok((id, Err(e))) => (self.name(id), e),
                        Err(e) => (self.name(e.id()), panic_message(e)),
                    };
                    tracing::error!(task = name, reason = %why, "a supervised task stopped; shutting down");
                    failure = Some(format!("{name}: {why}"));
                    self.shutdown.request();
                }
            }
        }
        let drain = async {
            while let Some(ended) = self.tasks.join_next_with_id().await {
                if let Ok((id, Err(e))) = ended {
                    tracing::warn!(task = self.name(id), error = %e, "task failed while stopping");
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                ?grace,
                "tasks still running after the grace period; aborting them"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        failure.map_or(Ok(()), Err)
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_panicking_pass_is_one_failure_and_the_loop_goes_on() {
        let liveness = Arc::new(Liveness::default());
        let mut sup = Supervisor::new(liveness.clone());
        let passes = Arc::new(AtomicU32::new(0));
        let counter = passes.clone();
        sup.every("flaky", Duration::from_millis(1), move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first pass explodes");
                }
                Ok(())
            }
        });
        let shutdown = sup.shutdown();
        let watcher = liveness.clone();
        tokio::spawn(async move {
            // Waits for the condition, not for a time: three passes done.
            while watcher.report().1.iter().all(|l| l.passes < 3) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            shutdown.request();
        });
        sup.run(Duration::from_secs(5)).await.unwrap();
        let (_, loops) = liveness.report();
        assert_eq!(loops[0].failures, 1, "{loops:?}");
        assert!(loops[0].passes >= 3);
        assert!(loops[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("first pass explodes"));
    }

    #[tokio::test]
    async fn a_task_that_dies_stops_the_others_and_is_reported() {
        let mut sup = Supervisor::new(Arc::default());
        let stopped = Arc::new(AtomicU32::new(0));
        let flag = stopped.clone();
        let shutdown = sup.shutdown();
        sup.spawn("listener", async move {
            shutdown.requested().await;
            flag.store(1, Ordering::SeqCst);
            Ok(())
        });
        sup.spawn("metadata service", async { Err("address in use".into()) });
        let err = sup.run(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err, "metadata service: address in use");
        // The listener saw shutdown before being dropped, or was dropped at
        // its await: either way it is no longer running.
        assert!(stopped.load(Ordering::SeqCst) <= 1);
    }

    #[tokio::test]
    async fn every_after_waits_a_period_before_the_first_pass() {
        let liveness = Arc::new(Liveness::default());
        let mut sup = Supervisor::new(liveness.clone());
        sup.every_after("scrub", Duration::from_secs(3600), || async {
            panic!("the first pass ran at start")
        });
        let shutdown = sup.shutdown();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            shutdown.request();
        });
        // Shutdown during the first wait ends the loop at once, no pass run.
        sup.run(Duration::from_secs(5)).await.unwrap();
        let (_, loops) = liveness.report();
        assert_eq!((loops[0].passes, loops[0].failures), (0, 0), "{loops:?}");
    }

    #[tokio::test]
    async fn transient_tasks_may_end_and_are_stopped_with_the_rest() {
        struct Dropped(Arc<AtomicU32>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let sup = Supervisor::new(Arc::default());
        let spawner = sup.spawner();
        let shutdown = sup.shutdown();
        let (finished, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (f, d) = (finished.clone(), dropped.clone());
        // One ends by itself (not a reason to stop), one runs until shutdown.
        assert!(spawner.spawn("short", async move {
            f.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(spawner.spawn("long", async move {
            let _guard = Dropped(d);
            std::future::pending::<()>().await
        }));
        let watch = finished.clone();
        let stopper = spawner.clone();
        let checker = tokio::spawn(async move {
            while watch.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            shutdown.request();
            assert!(!stopper.spawn("late", async {}), "taken while stopping");
        });
        sup.run(Duration::from_secs(5)).await.unwrap();
        checker.await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the long task was stopped"
        );
    }

    #[tokio::test]
    async fn a_hung_task_is_aborted_after_the_grace_period() {
        let mut sup = Supervisor::new(Arc::default());
        let shutdown = sup.shutdown();
        sup.every("stuck", Duration::from_millis(1), || async {
            std::future::pending::<()>().await;
            Ok(())
        });
        shutdown.request();
        // Returns (does not hang) although the pass never ends.
        sup.run(Duration::from_millis(50)).await.unwrap();
    }
}
