//! kedge's engine.
//!
//! Layout, in the order data flows through an agent:
//!
//! - [`store`]: the desired-state store trait and its two implementations (etcd, embedded file).
//! - [`docker`]: the only module that speaks to the Docker Engine; bollard's types stay inside it.
//! - [`planner`]: a pure function from (spec, observed container, image facts) to actions.
//! - [`executor`]: carries actions out; the only code that mutates containers.
//! - [`queue`]: the work queue: de-duplication, one worker per key, per-key backoff.
//! - [`runtime`]: the store watcher and the reflector caches the agent and the scheduler read.
//! - [`agent`]: the per-host agent: follows its specs and bindings, reconciles its engine, reports.
//! - [`controllers`]: the cluster-level controllers the scheduler's leader runs (scheduler,
//!   ContainerSets, upgrade campaigns, history compaction), woken by their reflector caches.

pub mod agent;
pub mod api;
pub mod controllers;
pub mod docker;
pub mod events;
pub mod executor;
pub mod hosts;
#[cfg(test)]
mod invariants;
pub mod mapping;
pub mod metrics;
pub mod notify;
pub mod planner;
pub mod queue;
pub mod registry;
pub mod remediation;
pub mod restarts;
pub mod runtime;
pub mod store;
pub mod updater;
pub mod upgrade;

/// An error and all its sources on one line (`outer: cause: root cause`), for status messages,
/// events and the CLI's one-line errors.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
