//! `kedge upgrade agents`: the agent upgrade campaign (docs/upgrades.md), `kedge get upgrades`, and
//! the two hidden commands kedge's own container image runs: `kedge upgrade-helper` (the helper
//! container that replaces an agent's container) and `kedge healthcheck` (the image's HEALTHCHECK).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use kedge_crds::campaign::{Campaign, CampaignState, HostUpgradeState};

use crate::base::connect;
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult, Exit};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Roll the agents that run in containers to a new kedge image, one host at a time.
    // `--version` here is the target version, not kedge's own (which `kedge --version` prints).
    #[command(disable_version_flag = true)]
    #[command(after_help = "Examples:\n  kedge upgrade agents --version 0.3.0\n  \
kedge upgrade agents --version 0.3.0 --image registry.example.com/kedge -l zone=a --timeout 3m\n\n\
Each selected host's agent starts a helper container that replaces the agent's container with one\n\
on REPOSITORY:VERSION (same configuration) and rolls back to the old container when the new agent\n\
does not report in within --timeout. The first host that fails stops the campaign.\n\
Exit codes: 0 every selected host that could be was upgraded (NotReady hosts and agents outside\n\
containers are listed Skipped), 1 the campaign failed (a host rolled back or failed) or was cancelled,\n\
2 usage, 5 server error, 6 gave up waiting (the campaign goes on; see `kedge get upgrades`).")]
    Agents(AgentsArgs),
    /// Cancel a running campaign: no further host is asked; the host in flight finishes or rolls back.
    #[command(after_help = "Examples:\n  kedge upgrade cancel 20261205-112233-ab12\n  \
kedge upgrade cancel 20261205-112233-ab12 --wait --timeout 5m\n\n\
Exit codes: 0 cancel accepted (with --wait: the campaign ended Cancelled), 3 no such campaign,\n\
4 the campaign has already finished, 5 server error, 6 gave up waiting (the cancel still stands).")]
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The campaign's ID (`kedge get upgrades`).
    pub id: String,
    /// Wait until the campaign has ended (the host in flight finished or rolled back).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: `90s`, `5m`.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// The target version: the image tag, and the version the new agents must report.
    #[arg(long)]
    pub version: String,
    /// The image repository (default: each agent's current image repository).
    #[arg(long, value_name = "REPOSITORY")]
    pub image: Option<String>,
    /// Only hosts whose labels match (`zone=a`, `k in (a,b)`, ...).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// How long one host's new agent has to report in before it is rolled back: `90s`, `3m`.
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Return once the campaign is created instead of following it.
    #[arg(long)]
    pub no_wait: bool,
}

/// `kedge upgrade-helper` (hidden): run by the helper container an agent starts.
#[derive(Debug, Args)]
pub struct HelperArgs {
    /// The agent's container (name or ID) to replace.
    #[arg(long)]
    pub container: String,
    /// The image to move it to.
    #[arg(long)]
    pub image: String,
    /// Seconds the new agent has to prove itself (turn healthy) before the old one is restored.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `kedge healthcheck` (hidden): the image's HEALTHCHECK.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The file the agent rewrites after every heartbeat that reached the store.
    #[arg(long, env = "KEDGE_READY_FILE", default_value = "/tmp/kedge-ready")]
    pub ready_file: PathBuf,
}

pub async fn run(command: UpgradeCommand, global: &GlobalArgs) -> CliResult<Exit> {
    match command {
        UpgradeCommand::Agents(args) => agents(args, global).await,
        UpgradeCommand::Cancel(args) => cancel(args, global).await,
    }
}

async fn cancel(args: CancelArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let timeout = parse_duration(&args.timeout).map_err(|e| CliError::usage(format!("--timeout: {e}")))?;
    let (_, client) = connect(global)?;
    let path = format!("/api/v1/upgrades/{}/cancel", encode(&args.id));
    let campaign: Campaign = crate::error::from_server(client.send(Method::POST, &path, None).await?.body)?;
    let in_flight: Vec<&str> = campaign
        .hosts
        .iter()
        .filter(|h| h.state == HostUpgradeState::Upgrading)
        .map(|h| h.name.as_str())
        .collect();
    if in_flight.is_empty() {
        println!("upgrade campaign {}: cancel requested; no further host will be asked", args.id);
    } else {
        println!(
            "upgrade campaign {}: cancel requested; waiting for {} to finish or roll back, no further host will be asked",
            args.id,
            in_flight.join(", ")
        );
    }
    if !args.wait {
        return Ok(Exit::Ok);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let campaign = read_campaign(&client, &args.id).await?;
        if campaign.state != CampaignState::Running {
            println!("campaign {} {:?}: {}", args.id, campaign.state, campaign.message);
            return Ok(Exit::Ok);
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(
                Exit::Timeout,
                format!("campaign {} had not ended after {}", args.id, human(timeout)),
            )
            .hint(format!("the cancel stands; follow it with `kedge get upgrades {}`", args.id)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn agents(args: AgentsArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let timeout = parse_duration(&args.timeout).map_err(|e| CliError::usage(format!("--timeout: {e}")))?;
    let (_, client) = connect(global)?;
    let mut body = json!({ "version": args.version, "timeoutSeconds": timeout.as_secs().max(1) });
    if let Some(fields) = body.as_object_mut() {
        if let Some(image) = &args.image {
            fields.insert("image".to_owned(), json!(image));
        }
        if let Some(selector) = &args.selector {
            fields.insert("selector".to_owned(), json!(selector));
        }
    }
    let campaign: Campaign =
        crate::error::from_server(client.send(Method::POST, "/api/v1/upgrades", Some(&body)).await?.body)?;
    let id = campaign.id.clone();
    let hosts = &campaign.hosts;
    let names = |wanted: bool| -> Vec<String> {
        hosts
            .iter()
            .filter(|h| (h.state != HostUpgradeState::Skipped) == wanted)
            .map(|h| h.name.clone())
            .collect()
    };
    println!(
        "upgrade campaign {id}: agents to {} on {} ({})",
        args.version,
        plural(names(true).len()),
        names(true).join(", ")
    );
    for host in hosts.iter().filter(|h| h.state == HostUpgradeState::Skipped) {
        println!("  {}: Skipped: {}", host.name, host.message);
    }
    if args.no_wait {
        println!("follow it with `kedge get upgrades {id}` and `kedge get hosts`");
        return Ok(Exit::Ok);
    }
    // Every host may take its timeout plus the report margin; then some slack for the leader.
    let budget =
        (timeout + Duration::from_secs(90)) * names(true).len().max(1) as u32 + Duration::from_secs(60);
    follow(&client, &id, budget).await
}

/// Prints each host's progress as it changes until the campaign ends. The agent serving the API
/// may itself be upgraded meanwhile: failed requests are retried until `budget` has passed.
async fn follow(client: &Client, id: &str, budget: Duration) -> CliResult<Exit> {
    let deadline = Instant::now() + budget;
    let mut shown: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match read_campaign(client, id).await {
            Ok(campaign) => {
                if let Some(since) = unreachable_since.take() {
                    eprintln!("the API answers again (after {:.1}s)", since.elapsed().as_secs_f64());
                }
                for host in &campaign.hosts {
                    let state = format!("{:?}", host.state);
                    let seen = (state.clone(), host.message.clone());
                    if host.state == HostUpgradeState::Pending || shown.get(&host.name) == Some(&seen) {
                        continue;
                    }
                    let took = host.duration_seconds.map(|s| format!(" in {s:.1}s")).unwrap_or_default();
                    let detail =
                        if host.message.is_empty() { String::new() } else { format!(": {}", host.message) };
                    println!("  {}: {state}{took}{detail}", host.name);
                    shown.insert(host.name.clone(), seen);
                }
                let exit = match campaign.state {
                    CampaignState::Running => None,
                    CampaignState::Succeeded => Some(Exit::Ok),
                    CampaignState::Failed | CampaignState::Cancelled => Some(Exit::Changes),
                };
                if let Some(exit) = exit {
                    println!("campaign {id} {:?}: {}", campaign.state, campaign.message);
                    return Ok(exit);
                }
            }
            Err(error) if error.exit == Exit::Server => {
                if unreachable_since.is_none() {
                    eprintln!(
                        "waiting for the API ({}); its agent may be the one being upgraded",
                        error.message
                    );
                    unreachable_since = Some(Instant::now());
                }
            }
            Err(error) => return Err(error),
        }
        if Instant::now() >= deadline {
            return Err(CliError::new(
                Exit::Timeout,
                format!("gave up following campaign {id} after {}", human(budget)),
            )
            .hint(format!("it goes on without this command: `kedge get upgrades {id}`")));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The helper container's command: replace the agent's container, print the result line, exit 0
/// (a non-zero exit is a crash, which Docker's restart policy answers by running it again).
pub async fn helper(args: HelperArgs) -> CliResult<Exit> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(crate::output::use_colour(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        .try_init();
    let timeout = kedge_controller::upgrade::bounded_timeout(args.timeout);
    let result = match kedge_controller::docker::DockerClient::connect().await {
        Ok(docker) => {
            kedge_controller::upgrade::helper::run(docker, &args.container, &args.image, timeout).await
        }
        Err(error) => kedge_controller::upgrade::helper::HelperResult {
            kind: kedge_controller::upgrade::helper::RESULT_KIND.to_owned(),
            outcome: kedge_controller::upgrade::helper::HelperOutcome::Failed,
            message: format!("cannot reach the Docker Engine: {error}"),
            old_id: None,
            new_id: None,
            duration_seconds: 0.0,
        },
    };
    println!("{}", serde_json::to_string(&result).unwrap_or_default());
    Ok(Exit::Ok)
}

/// Healthy (exit 0) while the agent's heartbeats reach the store, by the age of its ready file.
pub fn healthcheck(args: HealthcheckArgs) -> CliResult<Exit> {
    if kedge_controller::agent::host::ready_file_is_fresh(&args.ready_file) {
        Ok(Exit::Ok)
    } else {
        Err(CliError::new(
            Exit::Changes,
            format!(
                "{} is missing or stale: the agent's heartbeats do not reach the store",
                args.ready_file.display()
            ),
        ))
    }
}

async fn read_campaign(client: &Client, id: &str) -> CliResult<Campaign> {
    crate::error::from_server(client.get(&format!("/api/v1/upgrades/{}", encode(id))).await?)
}

/// A duration as people write it: `30s`, `5m`, `1h30m`.
fn human(duration: Duration) -> String {
    kedge_crds::HumanDuration::from_secs(duration.as_secs()).to_string()
}

fn plural(hosts: usize) -> String {
    if hosts == 1 {
        "1 host".to_owned()
    } else {
        format!("{hosts} hosts")
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s or 3m"))?;
    let too_long = || format!("`{text}` is too long a duration");
    match unit {
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => value.checked_mul(60).map(Duration::from_secs).ok_or_else(too_long),
        "h" => value.checked_mul(3600).map(Duration::from_secs).ok_or_else(too_long),
        _ => Err(format!("{text:?} is not a duration like 90s or 3m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        for (seconds, text) in
            [(0, "0s"), (30, "30s"), (300, "5m"), (125, "2m5s"), (5400, "1h30m"), (3601, "1h1s")]
        {
            assert_eq!(human(Duration::from_secs(seconds)), text);
        }
    }
}
