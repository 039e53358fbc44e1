//! kedge's benchmark driver (see scripts/bench and BENCHMARKS.md).

fn main() {
    println!("kedge-bench: no benchmarks yet");
}
