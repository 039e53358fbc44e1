//! kedge's integration and end-to-end tests, linked into one binary: each file beside this one is a
//! module. One binary instead of one per file keeps a build to a single link of the whole stack
//! (34 links filled a CI machine's disk) while nextest still runs every test in its own process.

mod api_support;
mod docker_support;
mod updater_support;

mod access;
mod agent_backoff;
mod agent_chaos;
mod agent_crash_recovery;
mod agent_crashloop;
mod agent_dependents;
mod agent_engine_restart;
mod agent_host;
mod agent_outage;
mod agent_ownership;
mod agent_repairs;
mod agent_restart;
mod agent_supervision;
mod api_server;
mod api_tls;
mod cli_agent;
mod cli_e2e;
mod cli_sets;
mod compat_podman;
mod docker_client;
mod dockermap_actions;
mod drift_repair;
mod environment;
mod executor_actions;
mod executor_crash;
mod executor_recreate;
mod hostile_input;
mod layering;
mod multihost_failover;
mod multihost_idle;
mod multihost_leader;
mod multihost_netns;
mod multihost_placement;
mod multihost_replicas;
mod multihost_upgrade;
mod policy;
mod recreate_handoff;
mod recreate_volumes;
mod registry_auth;
mod secrets;
mod store_embedded_crash;
mod store_etcd;
mod store_etcd_auth;
mod store_kinds;
mod store_scale;
mod updater_check;
mod updater_image;
mod updater_recreate;
mod upgrade_cancel;
mod upgrade_repository;
