//! Shared helpers for kedge's end-to-end tests: the test environment's endpoints, and cleanup guards.
