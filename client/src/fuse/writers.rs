//! Who wrote through a file handle, so that a close by another process
//! does not wait for the writer's data.
//!
//! The kernel sends FLUSH at every close of a descriptor, also of a copy a
//! child inherited: a program that spawns another closes its open files in
//! the child, between fork and exec. Close waits for the file's writes on
//! their way (close-to-open, see write_behind.rs), so without this a spawn
//! would wait for the parent's writes, and for as long as the nodes cannot
//! take them. Only a close by the writing process waits; a close by any
//! other returns at once (the writer's own close still waits).
//!
//! The kernel names the closing thread, not its process, and a program
//! may write on one thread and close on another: a thread not seen writing
//! is looked up in /proc, and one that cannot be told apart counts as the
//! writer (waiting is the safe side).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Threads remembered per handle; past that, every close waits.
const MAX_WRITERS: usize = 16;

#[derive(Default)]
pub(crate) struct Writers {
    threads: Mutex<Vec<u32>>,
    /// More threads wrote than are remembered, or one the kernel could not
    /// name (thread id 0: outside the mount's pid namespace).
    many: AtomicBool,
}

impl Writers {
    /// Notes that thread `tid` wrote.
    pub(crate) fn wrote(&self, tid: u32) {
        if self.many.load(Ordering::Relaxed) {
            return;
        }
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if threads.contains(&tid) {
            return;
        }
        if tid == 0 || threads.len() == MAX_WRITERS {
            self.many.store(true, Ordering::Relaxed);
        } else {
            threads.push(tid);
        }
    }

    /// Whether thread `tid` belongs to a process that wrote through the
    /// handle (reads /proc for a thread not seen writing).
    pub(crate) fn includes(&self, tid: u32) -> bool {
        if self.many.load(Ordering::Relaxed) {
            return true;
        }
        let threads = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if threads.is_empty() {
            return false;
        }
        if threads.contains(&tid) {
            return true;
        }
        let Some(closer) = process_of(tid) else {
            return true;
        };
        threads
            .iter()
            .any(|w| process_of(*w).is_none_or(|p| p == closer))
    }
}

/// The process (thread group) of thread `tid`, from /proc; None when it
/// cannot be read (the thread is gone).
fn process_of(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_thread() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }

    #[test]
    fn threads_of_the_writing_process_count_and_other_processes_do_not() {
        let w = Writers::default();
        assert!(!w.includes(this_thread()), "nobody wrote yet");
        let other = std::thread::spawn(this_thread).join().unwrap_or(0);
        // A thread of this process that is still running wrote.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let _ = tx.send(this_thread());
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap_or(0);
        w.wrote(tid);
        assert!(w.includes(tid));
        assert!(
            w.includes(this_thread()),
            "another thread of the writing process"
        );
        // Process 1 (init) is another process.
        assert!(!w.includes(1), "a thread of another process");
        // A thread that is gone cannot be told apart: it counts.
        assert!(w.includes(other), "a thread that exited");
        let _ = done_tx.send(());
        let _ = writer.join();
    }

    #[test]
    fn past_the_remembered_threads_every_close_counts() {
        let w = Writers::default();
        for t in 1..=MAX_WRITERS as u32 + 1 {
            w.wrote(t + 1_000_000);
        }
        assert!(w.includes(1));
        let z = Writers::default();
        z.wrote(0);
        assert!(z.includes(1), "an unnamed writer");
    }
}
