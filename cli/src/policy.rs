//! `kedge policy set NAMESPACE LEVEL` and `kedge policy get [NAMESPACE]`: the host-escape policy
//! level of each namespace (docs/policy.md), stored by the agents' API.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::base::{bad_answer, connect};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult, Exit};
use crate::{output, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Store a namespace's level, or `default` to forget it (the agents' `--policy-level` applies).
    #[command(after_help = "Examples:\n  kedge policy set ops privileged\n  kedge policy set ops default")]
    Set(SetArgs),
    /// Show the level of one namespace, or every stored level and the default.
    #[command(after_help = "Examples:\n  kedge policy get\n  kedge policy get ops -o json")]
    Get(GetArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub namespace: String,
    /// `privileged`, `baseline`, `restricted`, or `default` (forget the namespace's level).
    pub level: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<PolicyOutput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyOutput {
    Json,
    Yaml,
}

pub async fn run(command: PolicyCommand, global: &GlobalArgs) -> CliResult<Exit> {
    match command {
        PolicyCommand::Set(args) => set(args, global).await,
        PolicyCommand::Get(args) => get(args, global).await,
    }
}

/// The effective level of `namespace` as the agent answers it (`namespace`, `level`, `source`).
pub async fn read_level(client: &Client, namespace: &str) -> CliResult<Value> {
    client.get(&format!("/api/v1/policies/{}", encode(namespace))).await
}

async fn set(args: SetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (_, client) = connect(global)?;
    let path = format!("/api/v1/policies/{}", encode(&args.namespace));
    let answer = if args.level == "default" {
        client.send(Method::DELETE, &path, None).await?.body
    } else {
        let level: kedge_crds::PolicyLevel =
            args.level.parse().map_err(|e: String| CliError::usage(format!("{e}, or `default`")))?;
        client.send(Method::PUT, &path, Some(&json!({"level": level}))).await?.body
    };
    let (level, source) = level_and_source(&answer)?;
    match source {
        "default" => println!("policy of namespace {}: {level} (the default)", args.namespace),
        _ => println!("policy of namespace {}: {level}", args.namespace),
    }
    Ok(Exit::Ok)
}

async fn get(args: GetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (_, client) = connect(global)?;
    let answer = match &args.namespace {
        Some(namespace) => read_level(&client, namespace).await?,
        None => client.get("/api/v1/policies").await?,
    };
    match args.output {
        Some(PolicyOutput::Json) => println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default()),
        Some(PolicyOutput::Yaml) => print!("{}", output::to_yaml(&answer)),
        None => print!("{}", policy_table(&answer, args.namespace.is_some())?),
    }
    Ok(Exit::Ok)
}

/// NAMESPACE, LEVEL, SOURCE: one namespace, or every stored level then `*` (every other namespace)
/// at the default.
fn policy_table(answer: &Value, one: bool) -> CliResult<String> {
    let row = |item: &Value| -> CliResult<Vec<String>> {
        let namespace =
            item["namespace"].as_str().ok_or_else(|| bad_answer("a policy without `namespace`"))?;
        let (level, source) = level_and_source(item)?;
        Ok(vec![namespace.to_owned(), level.to_owned(), source.to_owned()])
    };
    let mut rows = Vec::new();
    if one {
        rows.push(row(answer)?);
    } else {
        for item in answer["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
            rows.push(row(item)?);
        }
        let default =
            answer["default"].as_str().ok_or_else(|| bad_answer("a policy list without `default`"))?;
        rows.push(vec!["*".to_owned(), default.to_owned(), "default".to_owned()]);
    }
    Ok(output::table(&["NAMESPACE", "LEVEL", "SOURCE"], &rows))
}

fn level_and_source(answer: &Value) -> CliResult<(&str, &str)> {
    match (answer["level"].as_str(), answer["source"].as_str()) {
        (Some(level), Some(source)) => Ok((level, source)),
        _ => Err(bad_answer("a policy without `level` or `source`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(answer: Value, one: bool, expected: &str) {
        assert_eq!(policy_table(&answer, one).unwrap(), expected);
    }

    #[test]
    fn tables_list_stored_levels_then_the_default() {
        check(
            json!({"default": "baseline", "items": [{"namespace": "ops", "level": "privileged", "source": "namespace"}]}),
            false,
            "NAMESPACE   LEVEL        SOURCE\nops         privileged   namespace\n*           baseline     default\n",
        );
        check(
            json!({"default": "restricted", "items": []}),
            false,
            "NAMESPACE   LEVEL        SOURCE\n*           restricted   default\n",
        );
        check(
            json!({"namespace": "web", "level": "baseline", "source": "default"}),
            true,
            "NAMESPACE   LEVEL      SOURCE\nweb         baseline   default\n",
        );
        assert!(policy_table(&json!({"namespace": "web"}), true).is_err());
    }
}
