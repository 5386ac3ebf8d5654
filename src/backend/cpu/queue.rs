//! [`WorkQueue`]: the FIFO of one stream, pushed by host threads, popped by the stream's worker.
//!
//! *Strategy*: the queue is a `VecDeque` under a mutex (pushes come from host threads that
//! already hold the runtime lock, so there is no contention to engineer away). An idle worker
//! spins briefly on an atomic length hint, so that a host issuing op after op does not pay a
//! futex wake-up per op, then parks on a condvar. Parking and pushing both happen under the
//! mutex, and the worker re-checks the queue under it before waiting, so a push cannot slip
//! between the check and the wait (no lost wake-up). An idle worker therefore uses no CPU.
//!
//! *Memory ordering*: the mutex orders every push before the pop that takes the item, so an
//! entry's contents (and everything the host did before pushing it) are visible to the worker.

use std::collections::VecDeque;

use super::sync::{AtomicUsize, Backoff, Condvar, Mutex, Ordering, lock, wait};

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    parked: bool,
    closed: bool,
}

/// A multi-producer, single-consumer FIFO with spin-then-park popping.
#[derive(Debug)]
pub(crate) struct WorkQueue<T> {
    state: Mutex<State<T>>,
    /// Number of items pushed and not yet popped; only a hint for the spin phase.
    len_hint: AtomicUsize,
    cv: Condvar,
}

impl<T> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                parked: false,
                closed: false,
            }),
            len_hint: AtomicUsize::new(0),
            cv: Condvar::new(),
        }
    }
}

impl<T> WorkQueue<T> {
    /// Appends an item and wakes the consumer if it is parked.
    pub(crate) fn push(&self, item: T) {
        let mut st = lock(&self.state);
        st.items.push_back(item);
        self.len_hint.fetch_add(1, Ordering::Release);
        let wake = st.parked;
        drop(st);
        if wake {
            self.cv.notify_one();
        }
    }

    /// Closes the queue: `pop` returns `None` once the remaining items are drained.
    #[allow(dead_code)] // used by the loom model and by future stream shutdown
    pub(crate) fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        let wake = st.parked;
        drop(st);
        if wake {
            self.cv.notify_one();
        }
    }

    /// Whether the queue looks empty (a racy hint: a push may land right after).
    #[cfg(all(test, loom))]
    pub(crate) fn is_empty_hint(&self) -> bool {
        self.len_hint.load(Ordering::Acquire) == 0
    }

    /// Takes the oldest item, spinning briefly and then parking while the queue is empty.
    /// Returns `None` only after [`close`](Self::close) once the queue is empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut backoff = Backoff::default();
        while self.len_hint.load(Ordering::Acquire) == 0 && backoff.snooze() {}
        let mut st = lock(&self.state);
        loop {
            if let Some(item) = st.items.pop_front() {
                self.len_hint.fetch_sub(1, Ordering::Release);
                return Some(item);
            }
            if st.closed {
                return None;
            }
            st.parked = true;
            st = wait(&self.cv, st);
            st.parked = false;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_across_threads_and_close() {
        let q = Arc::new(WorkQueue::default());
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(x) = q.pop() {
                    got.push(x);
                }
                got
            })
        };
        for i in 0..10_000u32 {
            q.push(i);
            if i % 1000 == 0 {
                // let the consumer drain and park now and then
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        q.close();
        let got = consumer.join().expect("consumer must not panic");
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of push / pop / close (README "Why no wake-up is lost (the work queue)").
    //!
    //! A lost wake-up of the parked consumer shows up as a loom deadlock; a lost, duplicated
    //! or reordered item, or a `None` before the queue is drained, fails an assertion. The
    //! consumer's spin phase is `yield_now` under loom, so every model is bounded to three
    //! preemptions (the module takes about 3 s in release mode, most of it the two-producer
    //! model). The queue's parking is all under its mutex, which loom models exactly, so
    //! unlike `signal`'s these models have no `SeqCst` caveat.

    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    use super::super::sync::loom_check as check;

    /// Pops until `None` and returns what came out.
    fn drain(q: &WorkQueue<u32>) -> Vec<u32> {
        let mut got = Vec::new();
        while let Some(x) = q.pop() {
            got.push(x);
        }
        got
    }

    /// Spins (as a loom scheduling point) until the consumer is parked on the condvar.
    fn until_parked<T>(q: &WorkQueue<T>) {
        while !lock(&q.state).parked {
            thread::yield_now();
        }
    }

    /// Push racing a pop: the consumer gets the item whether the push lands before its spin,
    /// during it, or after it parked.
    #[test]
    fn push_wakes_the_consumer() {
        check(|| {
            let q = Arc::new(WorkQueue::default());
            let q2 = q.clone();
            let producer = thread::spawn(move || q2.push(1u32));
            assert_eq!(q.pop(), Some(1));
            producer.join().unwrap();
            assert!(q.is_empty_hint());
        });
    }

    /// Push into a queue whose consumer is known to be parked.
    #[test]
    fn push_while_the_consumer_is_parked() {
        check(|| {
            let q = Arc::new(WorkQueue::default());
            let q2 = q.clone();
            let producer = thread::spawn(move || {
                until_parked(&q2);
                q2.push(9u32);
            });
            assert_eq!(q.pop(), Some(9));
            producer.join().unwrap();
        });
    }

    /// Two producers: both items arrive, each exactly once, and a producer's own items stay
    /// in order (FIFO per issuing thread).
    #[test]
    fn two_producers_one_consumer() {
        check(|| {
            let q = Arc::new(WorkQueue::default());
            let producers: Vec<_> = [[1u32, 2], [10, 20]]
                .into_iter()
                .map(|items| {
                    let q = q.clone();
                    thread::spawn(move || {
                        for x in items {
                            q.push(x);
                        }
                    })
                })
                .collect();
            let got: Vec<u32> = (0..4).map(|_| q.pop().unwrap()).collect();
            for p in producers {
                p.join().unwrap();
            }
            let mine = |small: bool| -> Vec<u32> {
                got.iter().copied().filter(|&x| (x < 10) == small).collect()
            };
            assert_eq!(mine(true), vec![1, 2]);
            assert_eq!(mine(false), vec![10, 20]);
        });
    }

    /// Shutdown while the consumer is parked: `close` wakes it and `pop` returns `None`.
    #[test]
    fn close_wakes_the_parked_consumer() {
        check(|| {
            let q = Arc::new(WorkQueue::<u32>::default());
            let q2 = q.clone();
            let closer = thread::spawn(move || {
                until_parked(&q2);
                q2.close();
            });
            assert_eq!(q.pop(), None);
            closer.join().unwrap();
        });
    }

    /// Push then close, racing the consumer: every item pushed before `close` is delivered,
    /// in order, before `pop` returns `None`; after the drain `pop` keeps returning `None`.
    #[test]
    fn push_then_close_drains_before_none() {
        check(|| {
            let q = Arc::new(WorkQueue::default());
            let q2 = q.clone();
            let producer = thread::spawn(move || {
                q2.push(1u32);
                q2.push(2);
                q2.close();
            });
            assert_eq!(drain(&q), vec![1, 2]);
            assert_eq!(q.pop(), None, "pop after the drain of a closed queue");
            producer.join().unwrap();
            assert!(q.is_empty_hint());
        });
    }
}
