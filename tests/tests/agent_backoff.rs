//! Per-key backoff: a spec whose image does not exist backs off, with its attempt count and next
//! retry growing in status, while specs changed at the same time all converge.

use std::time::Duration;

use kedge_controller::store::objects;
use kedge_crds::ConditionStatus;
use kedge_tests::{condition, eventually, test_spec, wait_ready, InProcessAgent, TestEnv, TestScope};
use serde_json::json;

/// `attempt N failed: ...; next retry in Xms|Xs at ...` → (N, X in milliseconds).
fn parse_degraded(message: &str) -> Option<(u32, u64)> {
    let attempt = message.strip_prefix("attempt ")?.split_whitespace().next()?.parse().ok()?;
    let delay = message.split("next retry in ").nth(1)?.split_whitespace().next()?;
    let millis = match delay.strip_suffix("ms") {
        Some(ms) => ms.parse().ok()?,
        None => (delay.strip_suffix('s')?.parse::<f64>().ok()? * 1000.0) as u64,
    };
    Some((attempt, millis))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_spec_backs_off_while_twenty_others_converge() {
    let env = TestEnv::get();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let agent = InProcessAgent::embedded(&format!("host-{id}")).await;

    // The test registry answers "manifest unknown" at once for an image it never had.
    let broken = format!("broken-{id}");
    let missing_image = format!("{}/kedge-test/missing-{id}:v1", env.registry);
    let spec = test_spec(&broken, &namespace, &agent.host, &cleanup, json!({"image": missing_image}));
    objects::apply_container(agent.store.as_ref(), &spec, None).await.expect("apply");
    let healthy: Vec<String> = (0..20).map(|i| format!("ok{i}-{id}")).collect();
    for name in &healthy {
        let spec = test_spec(name, &namespace, &agent.host, &cleanup, json!({"image": "kedge-test/app:v1"}));
        objects::apply_container(agent.store.as_ref(), &spec, None).await.expect("apply");
    }
    for name in &healthy {
        wait_ready(agent.store.as_ref(), &namespace, name, Duration::from_secs(90)).await;
    }

    // The broken spec reports each attempt, and the retry delay grows with them.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u32, u64)>::new()));
    eventually("the broken spec to back off through five attempts", Duration::from_secs(60), || {
        let store = agent.store.clone();
        let namespace = namespace.clone();
        let broken = broken.clone();
        let seen = seen.clone();
        async move {
            let degraded = condition(store.as_ref(), &namespace, &broken, "Degraded").await?;
            assert_eq!(degraded.status, ConditionStatus::True, "{degraded:?}");
            assert_eq!(degraded.reason, "Stalled");
            let parsed = parse_degraded(&degraded.message)
                .unwrap_or_else(|| panic!("unexpected message {:?}", degraded.message));
            let mut seen = seen.lock().unwrap();
            if seen.last().map(|last| last.0) != Some(parsed.0) {
                seen.push(parsed);
            }
            (parsed.0 >= 5).then_some(())
        }
    })
    .await;
    let synced = condition(agent.store.as_ref(), &namespace, &broken, "Synced").await.unwrap();
    assert_eq!(synced.reason, "ImagePullFailed", "{synced:?}");
    let seen = seen.lock().unwrap().clone();
    // Attempts are seen in increasing order; the delay grows from the first seen to the last
    // (exponential with jitter: each at least doubles the minimum before it).
    assert!(seen.windows(2).all(|pair| pair[0].0 < pair[1].0), "{seen:?}");
    let (first, last) = (seen.first().unwrap(), seen.last().unwrap());
    assert!(last.1 > first.1, "the retry delay grows: {seen:?}");
    agent.stop().await.expect("stops");
}
