//! The threads that run one realisation's builds and substitutions, kept
//! from one job to the next.
//!
//! A thread made for each build puts its making on the build's critical
//! path: mapping and faulting in a stack, then unmapping it, which on a
//! virtual machine costs about as much as some of the build's own steps.
//! A [`Workers`] queue instead hands each job to a thread that waits idle,
//! and its caller starts a thread only when none waits, so there are never
//! more threads than jobs that ran at once. The threads belong to a
//! [`std::thread::scope`], so jobs may borrow what the realisation owns;
//! [`Workers::close`] lets them end, and the scope joins them.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A job: runs once, on some worker thread.
pub(crate) type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

/// A queue of jobs and the threads that wait for them (see the module
/// docs).
pub(crate) struct Workers<'a> {
    state: Mutex<State<'a>>,
    ready: Condvar,
}

struct State<'a> {
    jobs: VecDeque<Job<'a>>,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

impl<'a> Workers<'a> {
    pub(crate) fn new() -> Workers<'a> {
        Workers {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<'a>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`. Returns true when no idle thread is left to take it:
    /// the caller then starts one running [`Workers::work`].
    #[must_use]
    pub(crate) fn push(&self, job: Job<'a>) -> bool {
        let mut st = self.lock();
        st.jobs.push_back(job);
        let short = st.jobs.len() > st.idle;
        drop(st);
        if !short {
            self.ready.notify_one();
        }
        short
    }

    /// A worker thread's body: runs jobs until the queue is closed and
    /// empty.
    pub(crate) fn work(&self) {
        loop {
            let job = {
                let mut st = self.lock();
                loop {
                    if let Some(j) = st.jobs.pop_front() {
                        break j;
                    }
                    if st.closed {
                        return;
                    }
                    st.idle += 1;
                    st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.idle -= 1;
                }
            };
            job();
        }
    }

    /// No more jobs: the threads end once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn a_waiting_thread_takes_the_next_job_and_no_thread_is_made_for_it() {
        let started = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel();
        let workers = Workers::new();
        std::thread::scope(|s| {
            let start = || {
                started.fetch_add(1, Ordering::SeqCst);
                s.spawn(|| workers.work());
            };
            for i in 0..20 {
                let tx = tx.clone();
                let job: Job<'_> = Box::new(move || {
                    let _ = tx.send((i, std::thread::current().id()));
                });
                if workers.push(job) {
                    start();
                }
                // One job at a time: the thread that ran the last one is
                // idle again before the next is queued.
                let _ = rx.recv();
                while workers.lock().idle == 0 {
                    std::thread::yield_now();
                }
            }
            workers.close();
        });
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn jobs_queued_together_each_get_a_thread_and_all_run_before_the_scope_ends() {
        let ran = AtomicUsize::new(0);
        let barrier = std::sync::Barrier::new(4);
        let (tx, rx) = mpsc::channel();
        let workers = Workers::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let tx = tx.clone();
                let (ran, barrier) = (&ran, &barrier);
                // All four must run at once to pass the barrier.
                let job: Job<'_> = Box::new(move || {
                    barrier.wait();
                    ran.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(std::thread::current().id());
                });
                if workers.push(job) {
                    s.spawn(|| workers.work());
                }
            }
            workers.close();
        });
        drop(tx);
        assert_eq!(ran.load(Ordering::SeqCst), 4);
        let threads: BTreeSet<String> = rx.iter().map(|t| format!("{t:?}")).collect();
        assert_eq!(threads.len(), 4);
    }
}
