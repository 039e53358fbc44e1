//! The cluster-level controllers: run by the scheduler's leader only, one agent of the fleet at a
//! time, every write fenced on the leader's term.
//!
//! - [`scheduler`]: the leadership (campaign, lease, fence) and the leader's loop; binds unplaced specs
//!   to ready hosts ([`scheduler::plan`], pure).
//! - [`projection`]: keeps each host's placements equal to the specs and bindings
//!   ([`projection::plan`], pure), so that an agent watches only its own host's prefix.
//! - [`sets`]: the ContainerSet controller ([`sets::decide`], pure).
//! - [`upgrade`]: drives the agent upgrade campaigns ([`crate::upgrade::advance`], pure).
//! - [`compaction`]: compacts the store's history.
//! - [`gitsource`]: keeps each GitSource's commit applied (docs/gitops.md).
//!
//! They read the store through reflector caches the leader starts when it wins and drops when it
//! loses, and never list on a timer.

pub(crate) mod caches;
pub mod compaction;
pub mod gitsource;
pub(crate) mod projection;
pub mod scheduler;
pub mod sets;
pub mod upgrade;
mod wake;
