//! Runs a request's future on the FUSE thread until it first has to wait,
//! then on the runtime.
//!
//! Handing each request to a runtime worker (`Handle::spawn`) costs a
//! wake-up of a parked worker: a futex call on the FUSE thread and a
//! context switch into the worker, before the request has even left for the
//! service. Profiles of the mount showed those switches as the largest
//! share of its CPU time. Here the FUSE thread itself polls the request's
//! future once: it builds the request and writes it to the service's
//! socket, and the future parks on the reply. The reply wakes it on the
//! worker that read the reply, which goes on with it there (a task spawned
//! from a worker runs next on that worker, with no further wake-up). A
//! future that finishes without waiting (an answer from this mount's own
//! state, a write taken into write-behind) never leaves the FUSE thread.
//!
//! What runs inline is only the code before the first wait. It must not
//! block on the kernel: a notification that drops cached pages may wait for
//! a page lock held by a reader whose READ the FUSE thread has yet to
//! serve. [`on_fuse_thread`] tells such code where it runs.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::runtime::Handle;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Being polled inline; a wake now only marks it.
const POLLING: u8 = 0;
/// Waiting, with its future in the slot; the next wake hands it over.
const PARKED: u8 = 1;
/// Woken while it was being polled inline.
const WOKEN: u8 = 2;
/// Given to the runtime, whose task wakes it from now on.
const HANDED: u8 = 3;

struct Inline {
    state: AtomicU8,
    slot: Mutex<Option<Task>>,
    rt: Handle,
}

impl Inline {
    /// Continues the parked future as a runtime task.
    fn hand_over(self: Arc<Self>) {
        let rt = self.rt.clone();
        rt.spawn(async move {
            let task = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = task {
                task.await;
            }
        });
    }
}

impl Wake for Inline {
    fn wake(self: Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                PARKED => HANDED,
                POLLING => WOKEN,
                _ => return,
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == HANDED => return self.hand_over(),
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }
}

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs inline on the FUSE thread (see the module's
/// note: it must not wait for the kernel there).
pub(super) fn on_fuse_thread() -> bool {
    INLINE.with(Cell::get)
}

/// Runs `future` here until it first waits, then on `rt`.
pub(super) fn run<F>(rt: &Handle, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    // Spawns, timers and sockets made in the first poll need the runtime.
    let _runtime = rt.enter();
    let inline = Arc::new(Inline {
        state: AtomicU8::new(POLLING),
        slot: Mutex::new(None),
        rt: rt.clone(),
    });
    let waker = Waker::from(inline.clone());
    let mut task: Task = Box::pin(future);
    INLINE.with(|f| f.set(true));
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        task.as_mut().poll(&mut Context::from_waker(&waker))
    }));
    INLINE.with(|f| f.set(false));
    match polled {
        Ok(Poll::Ready(())) => return,
        Ok(Poll::Pending) => {}
        Err(_) => {
            // As for a task of the runtime that panics: the request is
            // dropped (a reply dropped unsent answers EIO) and the FUSE
            // thread, which serves every other request, goes on.
            tracing::error!("a request's task panicked; it was answered with EIO");
            return;
        }
    }
    *inline.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    if inline
        .state
        .compare_exchange(POLLING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // What it waited for came while it was being polled: go on on the
        // runtime rather than hold the FUSE thread.
        inline.state.store(HANDED, Ordering::Release);
        inline.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A future that does not wait finishes on the calling thread; one
    /// that waits finishes on the runtime once woken, whether the wake
    /// comes after it parked or while it was being polled.
    #[test]
    fn finishes_inline_or_on_the_runtime_once_woken() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let here = std::thread::current().id();

        let (tx, rx) = std::sync::mpsc::channel();
        let t = tx.clone();
        run(rt.handle(), async move {
            assert!(on_fuse_thread());
            t.send(std::thread::current().id()).unwrap();
        });
        assert_eq!(rx.recv().unwrap(), here);
        assert!(!on_fuse_thread());

        // Woken later, from a worker.
        let (wake, waited) = tokio::sync::oneshot::channel::<u32>();
        let t = tx.clone();
        run(rt.handle(), async move {
            let v = waited.await.unwrap();
            assert!(!on_fuse_thread());
            t.send(std::thread::current().id()).unwrap();
            assert_eq!(v, 7);
        });
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            wake.send(7).unwrap();
        });
        let ran_on = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(ran_on, here);

        // Woken while being polled: the future wakes itself and waits.
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let t = tx.clone();
        run(
            rt.handle(),
            std::future::poll_fn(move |cx| {
                if p.fetch_add(1, Ordering::SeqCst) == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                t.send(std::thread::current().id()).unwrap();
                Poll::Ready(())
            }),
        );
        let ran_on = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_ne!(ran_on, here);
        assert_eq!(polls.load(Ordering::SeqCst), 2);

        // Many at once, woken from other threads in any order: each runs
        // to its end exactly once.
        let done = Arc::new(AtomicUsize::new(0));
        let mut wakers = Vec::new();
        for _ in 0..500 {
            let (w, r) = tokio::sync::oneshot::channel::<()>();
            wakers.push(w);
            let d = done.clone();
            run(rt.handle(), async move {
                r.await.unwrap();
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        let senders = std::thread::spawn(move || {
            for w in wakers {
                w.send(()).unwrap();
            }
        });
        senders.join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 500 {
            assert!(std::time::Instant::now() < deadline, "not all finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 500);
    }

    /// A task that panics before it first waits does not take the calling
    /// thread (the FUSE session) with it, and what it held is dropped, as
    /// a reply would be (fuser answers a dropped reply with EIO).
    #[test]
    fn a_panic_in_the_first_poll_drops_the_request_and_returns() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (reply, answered) = tokio::sync::oneshot::channel::<()>();
        run(rt.handle(), async move {
            let _reply = reply;
            panic!("a bug in a handler");
        });
        assert!(!on_fuse_thread());
        assert!(rt.block_on(answered).is_err(), "the reply was not dropped");
        let (tx, rx) = std::sync::mpsc::channel();
        run(rt.handle(), async move { tx.send(1).unwrap() });
        assert_eq!(rx.recv().unwrap(), 1);
    }
}
