//! CPU load beside a phase: `--load N` runs N busy loops while drift repair is measured, so the
//! figures show how kedge, the floor and Swarm hold up when the machine's cores are contended (the
//! condition under which drift p99 once grew to 1.9x the floor, issue 19).
//!
//! The loops are threads of the bench process at normal priority: they compete for the cores with
//! the engine, the in-process agent and the floor's reactor alike, and they stop when the guard is
//! dropped, so an error that leaves the phase early stops them too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// N busy loops, running from `start` until the guard is dropped.
pub struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Hogs {
    /// Starts `n` busy loops; with `n == 0` nothing runs and dropping the guard does nothing.
    pub fn start(n: usize) -> anyhow::Result<Hogs> {
        let mut hogs = Hogs { stop: Arc::new(AtomicBool::new(false)), threads: Vec::with_capacity(n) };
        for i in 0..n {
            let stop = hogs.stop.clone();
            // On a failed spawn, `hogs` is dropped on return and stops the loops already running.
            let thread =
                std::thread::Builder::new().name(format!("bench-hog-{i}")).spawn(move || busy(&stop))?;
            hogs.threads.push(thread);
        }
        if n > 0 {
            eprintln!("load: {n} busy loops running");
        }
        Ok(hogs)
    }
}

/// Spins on arithmetic the compiler cannot drop, checking the stop flag between short bursts so
/// the loop ends promptly without the flag's cache line being read on every iteration.
fn busy(stop: &AtomicBool) {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.threads.len();
        for thread in self.threads.drain(..) {
            // A busy loop cannot panic short of a bug; if it did, the phase's own result still stands.
            let _ = thread.join();
        }
        if n > 0 {
            eprintln!("load: {n} busy loops stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_hogs_start_no_thread() {
        let hogs = Hogs::start(0).unwrap();
        assert!(hogs.threads.is_empty());
    }

    #[test]
    fn hogs_burn_cpu_until_dropped_and_then_stop() {
        let hogs = Hogs::start(2).unwrap();
        assert_eq!(hogs.threads.len(), 2);
        let stop = hogs.stop.clone();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(hogs.threads.iter().all(|t| !t.is_finished()), "a busy loop ended on its own");
        // Dropping joins every thread: returning at all proves they stopped.
        drop(hogs);
        assert!(stop.load(Ordering::Relaxed));
    }
}
