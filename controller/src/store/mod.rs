//! The desired-state store: one trait, an etcd and an embedded implementation with the same semantics.
