//! The GitSource's row (`kedge get gitsources`), its describe page, `kedge reconcile gitsource NAME`
//! and `kedge suspend|resume gitsource NAME` (docs/gitops.md). The webhook secret never reaches the CLI: the API shows it `<redacted>`.

use chrono::{DateTime, Utc};
use kedge_crds::gitsource::{gitsource_condition, CommitRef};
use kedge_crds::meta::find_condition;
use kedge_crds::GitSource;
use reqwest::Method;

use crate::base::{connect, resource_path};
use crate::error::{CliResult, Exit};
use crate::kinds::Table;
use crate::objects::Declared;
use crate::output::{self, TableOptions};
use crate::GlobalArgs;

impl Table for GitSource {
    const NOUN: &'static str = "gitsource";

    fn columns(options: TableOptions) -> Vec<&'static str> {
        let mut columns = if options.namespaces { vec!["NAMESPACE"] } else { Vec::new() };
        columns.extend(["NAME", "URL", "REVISION", "READY", "AGE"]);
        if options.wide {
            columns.push("MESSAGE");
        }
        columns
    }

    fn cells(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        let mut row = if options.namespaces { vec![self.metadata.namespace.clone()] } else { Vec::new() };
        let status = self.status.as_ref();
        let ready = status.and_then(|s| find_condition(&s.conditions, gitsource_condition::READY));
        row.push(self.metadata.name.clone());
        row.push(kedge_crds::gitsource::url_without_password(&self.spec.url));
        row.push(revision(self.spec.reference_name(), status.and_then(|s| s.last_applied_commit.as_ref())));
        row.push(match (self.spec.suspend, ready) {
            (true, _) => "Suspended".to_owned(),
            (false, Some(ready)) => format!("{:?}", ready.status),
            (false, None) => "Unknown".to_owned(),
        });
        row.push(output::age(self.metadata.creation_timestamp.as_deref(), now));
        if options.wide {
            row.push(ready.map(|c| c.message.clone()).unwrap_or_default());
        }
        row
    }
}

/// The default page: metadata, status (commits, conditions, every error) as YAML, events.
impl Declared for GitSource {}

/// `main@abc1234`: what is followed and the commit applied.
fn revision(reference: String, applied: Option<&CommitRef>) -> String {
    match applied {
        Some(commit) => format!("{reference}@{}", commit.sha.get(..7).unwrap_or(&commit.sha)),
        None => format!("{reference}@<none>"),
    }
}

/// `kedge reconcile gitsource NAME`: asks the scheduler's leader to fetch and apply it now.
pub(crate) async fn reconcile(name: &str, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let path = format!("{}/reconcile", resource_path::<GitSource>(&resolved.namespace, name));
    client.send(Method::POST, &path, None).await?;
    println!("gitsource/{name} sync requested");
    Ok(Exit::Ok)
}

/// `kedge suspend|resume gitsource NAME`: sets its `spec.suspend` on the server, which keeps the rest
/// of the stored spec (the CLI only ever sees the secrets redacted, so it could not write them back).
pub(crate) async fn suspend(name: &str, suspend: bool, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let verb = if suspend { "suspend" } else { "resume" };
    let path = format!("{}/{verb}", resource_path::<GitSource>(&resolved.namespace, name));
    let answer = client.send(Method::POST, &path, None).await?;
    let changed = answer.body.get("changed").and_then(|v| v.as_bool()).unwrap_or(true);
    match (suspend, changed) {
        (true, true) => println!("gitsource/{name} suspended"),
        (true, false) => println!("gitsource/{name} was already suspended"),
        (false, true) => println!("gitsource/{name} resumed"),
        (false, false) => println!("gitsource/{name} was not suspended"),
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_column_names_the_reference_and_the_commit() {
        let commit = CommitRef { sha: "0123456789abcdef".into(), subject: String::new() };
        assert_eq!(revision("main".into(), Some(&commit)), "main@0123456");
        assert_eq!(revision("v1".into(), None), "v1@<none>");
    }
}
