//! The Docker Engine driver: a thin wrapper over bollard with kedge's own types at the boundary.
//!
//! - [`auth`]: registry credentials from a Docker `config.json`, sent with every pull, never shown.
//! - [`client`]: `DockerClient`, every engine call kedge makes.
//! - [`engine`]: the `Engine` trait, the calls the executor and a reconcile's read pass make,
//!   implemented by `DockerClient` and, in unit tests and the scale simulation (feature `sim`), by
//!   the in-memory [`fake::FakeEngine`] and [`fake::SimEngine`] (it with latencies).
//! - [`types`]: kedge's mirror of the Docker fields it uses (create config, inspect, image, events).
//! - [`labels`]: the ownership contract (which containers kedge may touch) and recreate markers.
//! - [`error`]: `DockerError`, the one error type of this module.
//!
//! bollard's types never leave this module: its minor versions change them.

pub mod auth;
pub mod client;
mod convert;
pub mod engine;
pub mod error;
#[cfg(any(test, feature = "sim"))]
pub mod fake;
pub mod labels;
pub mod types;

pub use auth::{RegistryAuth, RegistryConfigError, RegistryCredentials};
pub use client::{ContainerFilter, DockerClient, RemoveOptions};
pub use engine::Engine;
pub use error::{DockerError, DockerResult};
pub use types::*;
