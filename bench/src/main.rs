//! kedge's benchmark driver (see scripts/bench and BENCHMARKS.md).
//!
//! Subcommands:
//! - `store [--etcd ENDPOINTS]`: the desired-state stores alone (`store.rs`);
//! - `suite [...]`: every figure of BENCHMARKS.md against the engine on DOCKER_HOST (`suite.rs`):
//!   drift repair against the floor and Swarm (`drift.rs`, `swarm.rs`), rollout, idle cost, cold
//!   start and specs applied through the API, with the agent in process or as its binary (`kedge.rs`),
//!   optionally beside N busy loops during drift repair (`load.rs`);
//! - `scale [--hosts H --per-host C]`: H simulated agents over in-memory engines against a
//!   three-member etcd cluster of its own (`scale.rs`, docs/scale.md), the agents spread over child
//!   processes, each a `scale-agents` (internal: started and asked by `scale`).

mod common;
mod drift;
mod kedge;
mod load;
mod scale;
mod store;
mod suite;
mod swarm;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("store") => store::run(&args[1..]),
        Some("suite") => suite::run(&args[1..]),
        Some("scale") => scale::run(&args[1..]),
        Some("scale-agents") => scale::run_agents(&args[1..]),
        _ => {
            println!("usage: kedge-bench store [--etcd ENDPOINTS] | kedge-bench suite [--help] | kedge-bench scale [--hosts H --per-host C]");
            Ok(())
        }
    }
}
