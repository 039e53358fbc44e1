//! `kedge token create|list|revoke`: the API's scoped tokens (docs/access.md). Every subcommand needs an
//! admin token (the agent's bootstrap token is one).

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

use kedge_crds::token::{CreatedToken, Role, Token};

use crate::base::{bad_answer, connect};
use crate::client::encode;
use crate::error::{CliError, CliResult, Exit};
use crate::output;
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, once: it is stored only as a hash.
    #[command(after_help = "Examples:\n  kedge token create --role viewer --description dashboards\n  \
kedge token create --role deployer --namespace web,batch --ttl 30d\n\n\
Roles: viewer reads everything but sensitive kinds; deployer also writes, restarts, recreates and\n\
reads logs in its namespaces (-n/--namespace NS[,NS...], given on the command line: a context's\n\
namespace is not taken); admin does everything (tokens, upgrades).\n\
Prints the token alone on stdout (keep it now: it cannot be shown again); its id on stderr.\n\
Exit codes: 0 created, 2 bad input, 5 server error or not an admin.")]
    Create(CreateArgs),
    /// List the live tokens (never their secrets).
    #[command(after_help = "Examples:\n  kedge token list\n  kedge token list -o json")]
    List(ListArgs),
    /// Revoke a token: every agent refuses it from now on.
    #[command(after_help = "Example:\n  kedge token revoke 3f9a0c1d2e4b5a69\n\n\
Exit codes: 0 revoked, 3 no such token, 5 server error or not an admin.")]
    Revoke {
        /// The token's id (`kedge token list`; the part after `kedge_`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Deployer,
    Admin,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The namespaces a deployer works in: the global `-n/--namespace`, comma-separated (set by
    /// `run` from the command line only).
    #[arg(skip)]
    pub namespaces: Vec<String>,
    /// How long the token lives: `90m`, `12h`, `30d`; default: until revoked.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// What the token is for, shown by `kedge token list -o yaml`.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ListFormat>,
}

pub async fn run(command: TokenCommand, global: &GlobalArgs) -> CliResult<Exit> {
    match command {
        TokenCommand::Create(mut args) => {
            // `-n/--namespace` is global (one value); a deployer's list is comma-separated. Only a value
            // given on the command line counts: a context's or KEDGE_NAMESPACE's would scope a token
            // nobody asked to scope.
            if global.from_command_line.contains(&"namespace") {
                let given = global.namespace.as_deref().unwrap_or_default();
                args.namespaces = given.split(',').map(|ns| ns.trim().to_owned()).collect();
            }
            create(args, global).await
        }
        TokenCommand::List(args) => list(args, global).await,
        TokenCommand::Revoke { id } => revoke(&id, global).await,
    }
}

/// The body of `POST /api/v1/tokens` for `args`, or a usage error naming the flag.
pub fn create_request(args: &CreateArgs) -> CliResult<serde_json::Value> {
    let role = match args.role {
        RoleArg::Viewer => Role::Viewer,
        RoleArg::Deployer => Role::Deployer,
        RoleArg::Admin => Role::Admin,
    };
    match role {
        Role::Deployer if args.namespaces.is_empty() => {
            return Err(CliError::usage("--role deployer needs at least one --namespace"))
        }
        Role::Viewer | Role::Admin if !args.namespaces.is_empty() => {
            return Err(CliError::usage(format!(
                "--namespace applies only to --role deployer (a {role} reads every namespace)"
            )))
        }
        _ => {}
    }
    let ttl =
        args.ttl.as_deref().map(parse_ttl).transpose().map_err(|e| CliError::usage(format!("--ttl: {e}")))?;
    let mut body = json!({ "role": role, "namespaces": args.namespaces, "description": args.description });
    if let Some(seconds) = ttl {
        body["ttlSeconds"] = json!(seconds);
    }
    Ok(body)
}

/// A TTL in whole seconds: kedge's durations (`90s`, `1h30m`) or whole days (`30d`); at least 1s.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let seconds = match text.strip_suffix('d') {
        Some(days) if !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) => days
            .parse::<u64>()
            .ok()
            .and_then(|days| days.checked_mul(86_400))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?,
        _ => text.parse::<kedge_crds::HumanDuration>()?.0.as_secs(),
    };
    if seconds == 0 {
        return Err(format!("`{text}` is shorter than one second"));
    }
    Ok(seconds)
}

async fn create(args: CreateArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let body = create_request(&args)?;
    let (_, client) = connect(global)?;
    let answer = client.send(Method::POST, "/api/v1/tokens", Some(&body)).await?;
    let created: CreatedToken = serde_json::from_value(answer.body).map_err(bad_answer)?;
    eprintln!(
        "token {} ({}) created; it is shown once, here:",
        created.token.id,
        output::token_scope(&created.token)
    );
    println!("{}", created.bearer);
    Ok(Exit::Ok)
}

async fn list(args: ListArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (_, client) = connect(global)?;
    let answer = client.get("/api/v1/tokens").await?;
    let items: Vec<Token> =
        serde_json::from_value(answer.get("items").cloned().unwrap_or_default()).map_err(bad_answer)?;
    let value = serde_json::to_value(&items).unwrap_or_default();
    match args.output {
        Some(ListFormat::Json) => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Some(ListFormat::Yaml) => print!("{}", output::to_yaml(&value)),
        None => {
            let now = chrono::Utc::now();
            let rows: Vec<Vec<String>> = items.iter().map(|token| output::token_row(token, now)).collect();
            print!("{}", output::table(&output::TOKEN_HEADER, &rows));
        }
    }
    Ok(Exit::Ok)
}

async fn revoke(id: &str, global: &GlobalArgs) -> CliResult<Exit> {
    let (_, client) = connect(global)?;
    let path = format!("/api/v1/tokens/{}", encode(id));
    client.send(Method::DELETE, &path, None).await.map_err(|error| match error.exit {
        Exit::NotFound => CliError::new(Exit::NotFound, format!("token {id} not found"))
            .hint("list the tokens with `kedge token list`"),
        _ => error,
    })?;
    println!("token {id} revoked");
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(role: RoleArg, namespaces: &[&str], ttl: Option<&str>) -> CreateArgs {
        CreateArgs {
            role,
            namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
            ttl: ttl.map(str::to_owned),
            description: String::new(),
        }
    }

    #[test]
    fn create_requests_are_checked_before_anything_is_sent() {
        let body = create_request(&args(RoleArg::Deployer, &["a", "b"], Some("30d"))).unwrap();
        assert_eq!(
            body,
            json!({"role": "deployer", "namespaces": ["a", "b"], "description": "", "ttlSeconds": 2_592_000})
        );
        let refused = [
            (args(RoleArg::Deployer, &[], None), "--role deployer needs at least one --namespace"),
            (args(RoleArg::Viewer, &["a"], None), "--namespace applies only to --role deployer"),
            (args(RoleArg::Admin, &[], Some("soon")), "--ttl: invalid duration `soon`"),
            (args(RoleArg::Admin, &[], Some("0s")), "--ttl: `0s` is shorter than one second"),
            (args(RoleArg::Admin, &[], Some("99999999999999999d")), "too long"),
        ];
        for (args, expected) in refused {
            let error = create_request(&args).unwrap_err();
            assert_eq!(error.exit, Exit::Usage);
            assert!(error.message.contains(expected), "{args:?}: {}", error.message);
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        // clap checks its own tree (unique long flags: `--namespace` is global) only when asked.
        crate::command().debug_assert();
    }

    #[test]
    fn ttls_read_kedge_durations_and_days() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("1h30m"), Ok(5400));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert!(parse_ttl("d").is_err());
    }
}
