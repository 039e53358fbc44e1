//! `kedge top [NAME...]`: CPU, memory, network and block I/O and processes of containers, one sample
//! each, as `docker stats --no-stream` prints them, read by the agent of the containers' host.
//!
//! Only an agent's own engine has its containers' figures. Without names, `top` lists the namespace's
//! containers and samples those that run on the host of the agent it talks to, saying how many run
//! elsewhere; a named container on another host is that agent's 409, naming the host.

use futures::StreamExt;
use kedge_crds::Container;
use serde::Deserialize;

use crate::base::{connect, object_path};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult, Exit};
use crate::output;
use crate::types::{List, VersionInfo};
use crate::GlobalArgs;

/// How many containers are sampled at once (each sample takes the engine about a second).
const PARALLEL: usize = 8;

/// One sample, as the agent answers it (`docker::ContainerStats`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Stats {
    cpu_percent: f64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    pids: u64,
}

const HEADER: [&str; 7] = ["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"];

pub async fn top(names: &[String], global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let namespace = resolved.namespace.as_str();
    let (targets, elsewhere) =
        if names.is_empty() { on_this_host(&client, namespace).await? } else { (names.to_vec(), 0) };
    let samples: Vec<(String, CliResult<Stats>)> = futures::stream::iter(targets)
        .map(|name| {
            let client = &client;
            async move {
                let sample = match client.get(&format!("{}/stats", object_path(namespace, &name))).await {
                    Ok(answer) => crate::error::from_server(answer),
                    Err(error) => Err(error),
                };
                (name, sample)
            }
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    let mut rows = Vec::new();
    let mut failed = None;
    for (name, sample) in samples {
        match sample {
            Ok(stats) => rows.push(row(&name, &stats)),
            Err(error) => {
                eprintln!("error: container/{name}: {}", error.message);
                failed.get_or_insert(error);
            }
        }
    }
    if !rows.is_empty() {
        print!("{}", output::table(&HEADER, &rows));
    } else if failed.is_none() {
        eprintln!("No containers run in namespace {namespace} on this agent's host.");
    }
    if elsewhere > 0 {
        eprintln!(
            "{elsewhere} container(s) of namespace {namespace} run on other hosts: point --server at their agents"
        );
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(Exit::Ok),
    }
}

/// The names of the namespace's containers that run on the agent's host, and how many run elsewhere.
async fn on_this_host(client: &Client, namespace: &str) -> CliResult<(Vec<String>, usize)> {
    let version: VersionInfo =
        serde_json::from_value(client.get("/version").await?).map_err(crate::base::bad_answer)?;
    let host = version.host.ok_or_else(|| {
        CliError::new(Exit::Server, "the server runs no agent (it names no host): no container stats to read")
    })?;
    let list = List::<Container>::from_answer(
        client.get(&format!("/api/v1/namespaces/{}/containers", encode(namespace))).await?,
    )?;
    let (mut here, mut elsewhere) = (Vec::new(), 0);
    for container in list.items {
        match container.status.as_ref().and_then(|status| status.host.as_deref()) {
            Some(on) if on == host => here.push(container.metadata.name.clone()),
            Some(_) => elsewhere += 1,
            // Not placed or not reported yet: nothing runs to sample.
            None => {}
        }
    }
    here.sort();
    Ok((here, elsewhere))
}

fn row(name: &str, stats: &Stats) -> Vec<String> {
    let memory_percent = if stats.memory_limit_bytes > 0 {
        stats.memory_bytes as f64 / stats.memory_limit_bytes as f64 * 100.0
    } else {
        0.0
    };
    vec![
        name.to_owned(),
        format!("{:.2}%", stats.cpu_percent),
        format!("{} / {}", binary(stats.memory_bytes), binary(stats.memory_limit_bytes)),
        format!("{memory_percent:.2}%"),
        format!("{} / {}", decimal(stats.net_rx_bytes), decimal(stats.net_tx_bytes)),
        format!("{} / {}", decimal(stats.block_read_bytes), decimal(stats.block_write_bytes)),
        stats.pids.to_string(),
    ]
}

/// Memory in binary units, as `docker stats`: `40.5MiB`, `1.95GiB`.
fn binary(bytes: u64) -> String {
    scaled(bytes, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// I/O in decimal units, as `docker stats`: `105B`, `8.19kB`, `1.2MB`.
fn decimal(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}{}", units[0])
    } else {
        format!("{value:.3}").trim_end_matches('0').trim_end_matches('.').to_owned() + units[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_stats_writes_them() {
        assert_eq!(binary(0), "0B");
        assert_eq!(binary(40 * 1024 * 1024 + 512 * 1024), "40.5MiB");
        assert_eq!(binary(64 * 1024 * 1024), "64MiB");
        assert_eq!(decimal(105), "105B");
        assert_eq!(decimal(8192), "8.192kB");
        assert_eq!(decimal(u64::MAX), "18446744.074TB");
    }

    #[test]
    fn a_row_has_every_column() {
        let stats = Stats {
            cpu_percent: 12.345,
            memory_bytes: 32 * 1024 * 1024,
            memory_limit_bytes: 64 * 1024 * 1024,
            net_rx_bytes: 1500,
            net_tx_bytes: 20,
            block_read_bytes: 0,
            block_write_bytes: 4096,
            pids: 3,
        };
        assert_eq!(
            row("web", &stats),
            ["web", "12.35%", "32MiB / 64MiB", "50.00%", "1.5kB / 20B", "0B / 4.096kB", "3"]
        );
        // No limit known: no division by zero.
        assert_eq!(row("x", &Stats::default())[3], "0.00%");
    }
}
