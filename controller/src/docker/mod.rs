//! The Docker Engine driver: a thin wrapper over bollard with kedge's own types at the boundary.
