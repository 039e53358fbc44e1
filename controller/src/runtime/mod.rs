//! The controller runtime, in the spirit of kube-runtime: a [`watcher`] that follows one prefix of
//! the store through compactions and outages, and a [`reflector`] that keeps a decoded cache of it,
//! knows whether it is in sync, and lets readers wait for a change or for a revision.
//!
//! The agent's followers (specs, bindings, its host's upgrade request, the host lock and the
//! scheduler's leader key) and the scheduler's leader caches are built on them, so that nothing
//! re-lists the store on a timer: store reads are proportional to change, not to time.

pub mod reflector;
pub mod watcher;

pub use reflector::{Applied, Reflector, Sighting, Stored, Unreadable};
pub use watcher::{Backoff, Event, Watcher};

#[cfg(test)]
mod tests;
