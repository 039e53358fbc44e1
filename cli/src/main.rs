//! The `kedge` binary: argument parsing and output formatting only; the work happens in `kedge-controller`.

fn main() {
    println!("kedge {}", env!("CARGO_PKG_VERSION"));
}
