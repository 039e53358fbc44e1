//! Store traffic of an idle fleet: three agents on one etcd, nothing to do. An agent that does not
//! lead the scheduler follows everything it needs (specs, bindings, the leader key, its host lock, its
//! upgrade request) by watching, so over an idle window it makes no range read at all; counted through
//! the store layer ([`CountingStore`], one per agent).
//!
//! The window is 20 s, not the 60 s issue 17 names: the followers' polls it replaced ran every 1 s
//! (leader key, upgrade request) and 3.3 s (host lock), so 20 s would have shown about 50 reads per
//! agent; a longer window only slows CI. The leader still lists its prefixes every pass (to be moved
//! onto reflector caches); its count is printed, not asserted. Measured once over 60 s: the two
//! followers 0 each, the leader 354 (six lists a pass: hosts, liveness, bindings, sets, set statuses,
//! campaigns).

use std::sync::Arc;
use std::time::Duration;

use kedge_controller::store::{keys, CountingStore, EtcdOptions, EtcdStore, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{eventually, run_id, InProcessAgent};

const READY: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn idle_followers_make_no_range_reads() {
    let id = run_id();
    let etcd = EtcdCluster::start(1).await;
    let store: SharedStore = Arc::new(EtcdStore::connect(EtcdOptions::new(etcd.endpoints())).await.unwrap());
    let mut agents = Vec::new();
    let mut counters = Vec::new();
    for n in 0..3 {
        let host = format!("idle{n}-{id}");
        let counting = Arc::new(CountingStore::new(store.clone()));
        counters.push((host.clone(), counting.clone()));
        agents.push(InProcessAgent::start(counting as SharedStore, &host, None).await);
    }
    for (host, _) in &counters {
        let alive = keys::host_lease_key(host).unwrap();
        eventually("every agent alive", READY, || async { store.get(&alive).await.ok()? }).await;
    }
    let leader = eventually("a scheduler leader", READY, || async {
        let kv = store.get(keys::SCHEDULER_LEADER).await.ok()??;
        Some(String::from_utf8_lossy(&kv.value).into_owned())
    })
    .await;
    // Settled: every follower's count stands still for a second (their watches are open).
    eventually("the followers settled", READY, || async {
        let before: Vec<u64> = counters.iter().map(|(_, c)| c.range_requests()).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<u64> = counters.iter().map(|(_, c)| c.range_requests()).collect();
        counters
            .iter()
            .zip(before.iter().zip(&after))
            .all(|((host, _), (b, a))| *host == leader || a == b)
            .then_some(())
    })
    .await;

    let before: Vec<u64> = counters.iter().map(|(_, c)| c.range_requests()).collect();
    tokio::time::sleep(WINDOW).await;
    for ((host, counter), before) in counters.iter().zip(before) {
        let reads = counter.range_requests() - before;
        eprintln!(
            "{host}{}: {reads} range reads in {WINDOW:?} idle",
            if *host == leader { " (leader)" } else { "" }
        );
        if *host != leader {
            assert_eq!(reads, 0, "{host}, an idle follower, read the store");
        }
    }
    for agent in agents {
        agent.stop().await.expect("the agent stops");
    }
}
