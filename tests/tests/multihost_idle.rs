//! Store traffic of an idle fleet: three agents on one etcd, nothing to do. Every agent follows what
//! it needs (specs, bindings, the leader key, its host lock, its upgrade request) by watching, and the
//! scheduler's leader reads reflector caches of the prefixes its passes need (hosts, liveness,
//! bindings, sets, set statuses, statuses, campaigns, upgrade requests), so over an idle window no
//! agent, leader included, makes a range read; counted through the store layer ([`CountingStore`],
//! one per agent). Watch progress needs none: a quiet watch stays open, and only a lost watch or a
//! compaction makes a cache list again, neither of which happens here. The history compactor samples
//! the store's revision from the caches, not with a read.
//!
//! The window is 20 s, not the 60 s issue 17 names: the polls it replaced ran every 1 s (the
//! followers' leader key and upgrade request, the leader's six lists a pass) and 3.3 s (host lock),
//! so 20 s would have shown about 50 reads per follower and 120 for the leader; a longer window only
//! slows CI. Measured over 60 s before the leader moved onto caches: the followers 0 each, the leader
//! 354; after: 0 for all three.

use std::sync::Arc;
use std::time::Duration;

use kedge_controller::store::{keys, CountingStore, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{eventually, run_id, InProcessAgent};

const READY: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn idle_agents_make_no_range_reads() {
    let id = run_id();
    let etcd = EtcdCluster::start(1).await;
    let store = etcd.store().await;
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
    // Settled: every agent's count stands still for a second (their watches are open, the leader's
    // caches listed).
    eventually("the agents settled", READY, || async {
        let before: Vec<u64> = counters.iter().map(|(_, c)| c.range_requests()).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: Vec<u64> = counters.iter().map(|(_, c)| c.range_requests()).collect();
        counters.iter().zip(before.iter().zip(&after)).all(|(_, (b, a))| a == b).then_some(())
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
        assert_eq!(reads, 0, "{host}, an idle agent, read the store");
    }
    for agent in agents {
        agent.stop().await.expect("the agent stops");
    }
}
