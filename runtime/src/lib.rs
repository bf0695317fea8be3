//! The control-loop runtime every CPFS process shares, in the manner of
//! kube-rs controllers:
//!
//! - [`supervisor::Supervisor`] owns every background task of a process in
//!   one `JoinSet`, stops them together on shutdown, isolates a panicking
//!   pass from the loop that runs it, and turns a task that dies into a
//!   process exit instead of a silent hole;
//! - [`workqueue::WorkQueue`] schedules per-object work: each key is due,
//!   waiting for a change, or backing off after its own failures, so one
//!   broken object never slows the others;
//! - [`liveness::Liveness`] records each loop's passes for `/healthz`;
//! - [`retry`] is the one retry policy of clients and loops.

pub mod liveness;
pub mod retry;
pub mod supervisor;
pub mod workqueue;

pub use liveness::Liveness;
pub use supervisor::{Shutdown, Spawner, Supervisor};
pub use workqueue::{Next, WorkQueue};
