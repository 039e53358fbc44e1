//! `kedge-bench store [--etcd ENDPOINTS]`: puts per second and watch delivery latency of both stores.
//!
//! Measured, per store:
//! - sequential puts/s: one writer, each put awaited (every put is one fsync, or one etcd quorum write);
//! - concurrent puts/s: 32 writers at once (the embedded store's group commit shares fsyncs);
//! - watch delivery latency: from the start of a put to the arrival of its event at a watcher of the
//!   prefix (so it includes the write's own commit), p50 / p99 / max over paced writes.
//!
//! Every phase is bounded in time, so a run takes seconds. etcd is measured when `--etcd` is given or
//! `KEDGE_ETCD_ENDPOINTS` is set (`scripts/test-env env`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kedge_controller::store::{
    next_event, EmbeddedOptions, EmbeddedStore, EtcdOptions, EtcdStore, PutCondition, SharedStore,
};

const PHASE: Duration = Duration::from_secs(2);
const CONCURRENCY: usize = 32;
const LATENCY_SAMPLES: usize = 300;
const VALUE_BYTES: usize = 512;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut etcd = std::env::var("KEDGE_ETCD_ENDPOINTS").ok().filter(|s| !s.is_empty());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--etcd" => etcd = Some(it.next().context("--etcd needs ENDPOINTS")?.clone()),
            other => anyhow::bail!("unknown argument {other:?}; usage: kedge-bench store [--etcd ENDPOINTS]"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("kedge-bench-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let embedded: SharedStore =
            Arc::new(EmbeddedStore::open(dir.join("bench.db"), EmbeddedOptions::default()).await?);
        let result = measure("embedded", embedded).await;
        std::fs::remove_dir_all(&dir)?;
        result?;
        match etcd {
            Some(endpoints) => {
                let store: SharedStore =
                    Arc::new(EtcdStore::connect(EtcdOptions::from_url(&endpoints)?).await?);
                measure("etcd", store).await?;
            }
            None => println!("etcd: skipped (no --etcd and no KEDGE_ETCD_ENDPOINTS)"),
        }
        Ok(())
    })
}

async fn measure(name: &str, store: SharedStore) -> anyhow::Result<()> {
    let prefix = format!("/kedge-bench/{}/", std::process::id());
    let value = vec![b'x'; VALUE_BYTES];

    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < PHASE {
        store.put(&format!("{prefix}seq/{}", n % 1000), value.clone(), PutCondition::Always, 0).await?;
        n += 1;
    }
    let sequential = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (store, prefix, value) = (store.clone(), prefix.clone(), value.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < PHASE {
                    let key = format!("{prefix}conc/{w}/{}", n % 100);
                    store.put(&key, value.clone(), PutCondition::Always, 0).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let concurrent = total as f64 / started.elapsed().as_secs_f64();

    // Latency: one watcher; paced puts whose value carries the send time.
    let base = store.list(&format!("{prefix}lat/")).await?.revision;
    let mut watch = store.watch(&format!("{prefix}lat/"), base + 1).await?;
    let origin = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(LATENCY_SAMPLES);
        while lat.len() < LATENCY_SAMPLES {
            let ev = tokio::time::timeout(Duration::from_secs(10), next_event(&mut watch))
                .await
                .context("watch stalled")?
                .context("watch ended")??;
            let sent_nanos: u64 = std::str::from_utf8(&ev.kv.value)?.parse()?;
            lat.push(origin.elapsed() - Duration::from_nanos(sent_nanos));
        }
        anyhow::Ok(lat)
    });
    for i in 0..LATENCY_SAMPLES {
        let sent = origin.elapsed().as_nanos().to_string();
        store.put(&format!("{prefix}lat/{}", i % 10), sent.into_bytes(), PutCondition::Always, 0).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut lat = receiver.await??;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    println!(
        "{name:>8}: sequential {sequential:>8.0} puts/s | {CONCURRENCY} writers {concurrent:>8.0} puts/s | \
         watch latency p50 {:?} p99 {:?} max {:?} ({} samples, {VALUE_BYTES}-byte values)",
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        lat.len()
    );
    Ok(())
}
