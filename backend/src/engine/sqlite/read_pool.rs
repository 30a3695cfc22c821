//! Reads on threads of their own: each owns a read connection and takes queries from one
//! shared queue. The engine keeps two pools: one for reads someone waits on (joins, gap
//! repair, the API's history) and one for catch-ups, at the lowest priority (see
//! [`Priority`]).
//!
//! Dedicated threads rather than tokio's blocking pool: those come and go with the load,
//! and every new thread brings new allocator state, which under connection churn looked
//! like a slow leak; these live as long as the engine, are named (`relay-read-N`, so their
//! CPU shows apart in profiles), and keep their SQLite page caches warm.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::engine::EngineError;

/// A query waiting for a reader.
type Job = Box<dyn FnOnce(&Connection) + Send>;

/// How the readers of a pool are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    /// Nice 19: for short reads someone waits on (a join opening a room from the store, a
    /// gap repair). They still get a share of a full core by weight: under connection churn
    /// (100,000 short connections) four such readers let the relay take about 3,600 a second,
    /// and about 2,800 under `SCHED_IDLE`. (At nice 0 it was worse again, about 2,200, with
    /// every thread's CPU per connection up.)
    Low,
    /// Linux's `SCHED_IDLE`: only what the core has left, and preempted at once by any other
    /// thread. For catch-ups, whose pages of 500 messages delayed live deliveries even from a
    /// reader at nice 19 (docs/benchmarks.md, "Catch-ups beside live rooms").
    Idle,
}

/// The readers and their queue.
#[derive(Debug)]
pub(super) struct ReadPool {
    shared: Arc<Shared>,
    /// The threads, joined by [`ReadPool::stop`].
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    /// Queries in arrival order, and whether the pool is stopping. Held only to push or
    /// pop; a reader waits on `ready`, which releases it.
    queue: Mutex<Queue>,
    /// Signalled when a query is queued or the pool stops.
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stopping: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl ReadPool {
    /// One thread per connection, named `relay-<name>-N`, scheduled at `priority` by the
    /// time this returns.
    pub(super) fn start(connections: Vec<Connection>, name: &str, priority: Priority) -> ReadPool {
        let shared = Arc::new(Shared::default());
        let (lowered, scheduled) = std::sync::mpsc::channel();
        let threads: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(index, connection)| {
                let (shared, lowered) = (shared.clone(), lowered.clone());
                std::thread::Builder::new()
                    .name(format!("relay-{name}-{index}"))
                    .spawn(move || {
                        lower_priority(priority);
                        let _ = lowered.send(());
                        read(&shared, &connection);
                        super::close(connection);
                    })
                    .expect("spawn a reader thread")
            })
            .collect();
        for _ in &threads {
            let _ = scheduled.recv();
        }
        ReadPool {
            shared,
            threads: Mutex::new(threads),
        }
    }

    /// Runs `query` on the next free reader.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let (answer, answered) = oneshot::channel();
        {
            let mut queue = self.shared.lock();
            if queue.stopping {
                return Err(EngineError::Stopped);
            }
            queue.jobs.push_back(Box::new(move |connection| {
                let _ = answer.send(query(connection));
            }));
        }
        self.shared.ready.notify_one();
        answered.await.map_err(|_| EngineError::Stopped)?
    }

    /// Lets the readers finish what is queued, then waits for them.
    pub(super) fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.ready.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a reader thread panicked");
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Pushes and pops only: a panic elsewhere cannot leave it inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Puts the calling reader thread at `priority`.
fn lower_priority(priority: Priority) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_current_thread_priority, set_thread_priority_and_policy, thread_native_id,
    };
    let lowered = match priority {
        Priority::Low => set_current_thread_priority(ThreadPriority::Min),
        Priority::Idle => set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ),
    };
    if let Err(err) = lowered {
        tracing::debug!(?err, ?priority, "cannot lower a reader thread's priority");
    }
}

/// A reader's life: take the next query, run it, until the pool stops and the queue is
/// empty.
fn read(shared: &Shared, connection: &Connection) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.stopping {
                    return;
                }
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        job(connection);
    }
}
