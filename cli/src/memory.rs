//! kedge's memory allocator: jemalloc, with its background thread handing freed pages back.
//!
//! With glibc's allocator, an idle agent kept the peak of its last burst of work: at 500
//! containers it held 31 MiB of anonymous memory, of which `malloc_trim` could give back 10 MiB
//! (measured with gdb on the idle agent). glibc gives back only the top of each heap by itself, and
//! each thread that allocated got its own arena with its own peak. jemalloc returns freed pages to
//! the system after they stayed unused for its decay time (10 s by default), and with its
//! background thread it does so also when the process allocates nothing, which is an idle agent's
//! case. The background thread sleeps while there is nothing to purge.
//!
//! It is built with one arena (`JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`): with its
//! default of eight on two cores an idle agent at 500 containers held 22.1 MiB of anonymous memory,
//! with one 20.6 MiB. Without per-thread caches too it held 18.4 MiB, but the API's concurrent
//! applies on etcd fell by a quarter; the caches stay.
//!
//! Installed as the global allocator by `main.rs` for every command; [`hand_back_freed_memory`]
//! is called by `kedge agent` only (short commands exit long before a purge matters).

/// Starts jemalloc's background purging thread. A failure is logged, not fatal: the agent works
/// the same, holding on to more memory.
pub fn hand_back_freed_memory() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "could not start the allocator's background thread; freed memory is given back only as the agent allocates");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The process's anonymous resident memory: resident minus file-backed pages (`statm`).
    fn anonymous_resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: Vec<usize> = statm.split_whitespace().map(|field| field.parse().unwrap()).collect();
        (pages[1] - pages[2]) * 4096
    }

    /// 64 MiB allocated in 4 KiB blocks and freed: with the background thread on, the process's
    /// resident memory falls back by most of it, without this thread allocating anything more.
    #[test]
    fn freed_memory_is_handed_back_while_nothing_allocates() {
        hand_back_freed_memory();
        let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![(i % 251) as u8; 4096]).collect();
        let peak = anonymous_resident();
        drop(blocks);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resident = anonymous_resident();
            if resident + (48 << 20) <= peak {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "resident {} MiB after 60 s, {} MiB at the peak",
                resident >> 20,
                peak >> 20
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
