//! The host record: what each agent stores about its host (`/kedge/v1/hosts/<name>`), and what the
//! scheduler's leader, the upgrade campaign and the API read. The type is `kedge_crds::host`'s (one
//! definition shared with the CLI); this module keeps the controller's path to it, below both the
//! agent that writes it and the controllers that read it.

pub use kedge_crds::host::{AgentContainer, HostRecord};
