//! Host registration: a running agent keeps its host's record (version, Docker version, capacity,
//! labels, heartbeat) and a liveness key on its lease; stopped, the host reads NotReady at once and
//! its record stays.

use std::time::Duration;

use kedge_controller::agent::host::HostRecord;
use kedge_controller::store::keys;
use kedge_tests::{eventually, run_id, InProcessAgent};

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_registers_its_host_and_goes_not_ready_when_stopped() {
    let id = run_id();
    let agent = InProcessAgent::etcd(&format!("host-{id}")).await;
    let store = agent.store.clone();
    let record_key = keys::host_key(&agent.host).unwrap();
    let alive_key = keys::host_lease_key(&agent.host).unwrap();
    let record: HostRecord = eventually("the host record", Duration::from_secs(30), || async {
        let kv = store.get(&record_key).await.ok()??;
        serde_json::from_slice(&kv.value).ok()
    })
    .await;
    assert_eq!(record.name, agent.host);
    assert_eq!(record.version, env!("CARGO_PKG_VERSION"));
    assert!(!record.docker_version.is_empty(), "{record:?}");
    assert!(record.cpus >= 1 && record.memory_bytes > 0, "capacity is reported: {record:?}");
    let alive = store.get(&alive_key).await.unwrap().expect("the liveness key exists while the agent runs");
    assert_ne!(alive.lease, 0, "the liveness key is on a lease");

    agent.stop().await.expect("stops");
    assert!(store.get(&alive_key).await.unwrap().is_none(), "stopped: the lease is revoked at once");
    assert!(store.get(&record_key).await.unwrap().is_some(), "the record stays for `kedge get hosts`");
    store.delete(&record_key, kedge_controller::store::DeleteCondition::Always).await.unwrap();
}
