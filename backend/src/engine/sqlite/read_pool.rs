//! Reads on threads of their own: each owns a read connection and takes queries from one
//! shared queue.
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
    /// One thread per connection.
    pub(super) fn start(connections: Vec<Connection>) -> ReadPool {
        let shared = Arc::new(Shared::default());
        let threads = connections
            .into_iter()
            .enumerate()
            .map(|(index, connection)| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("relay-read-{index}"))
                    .spawn(move || {
                        lower_priority();
                        read(&shared, &connection)
                    })
                    .expect("spawn a reader thread")
            })
            .collect();
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

/// Readers serve joins and catch-ups, which can wait a little; live deliveries cannot. The
/// readers run under Linux's `SCHED_IDLE` policy: a thread delivering a live message takes
/// the core from a reader at once, and readers get what the core has left (a nice value of
/// 19 alone still shared the core by weight, and a reader's slice delayed live messages).
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(err) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::debug!(?err, "cannot lower a reader thread's priority");
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
