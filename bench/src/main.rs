//! kedge's benchmark driver (see scripts/bench and BENCHMARKS.md).
//!
//! Subcommands: `store [--etcd ENDPOINTS]` (the desired-state stores, see `store.rs`).

mod store;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("store") => store::run(&args[1..]),
        _ => {
            println!("usage: kedge-bench store [--etcd ENDPOINTS]");
            Ok(())
        }
    }
}
