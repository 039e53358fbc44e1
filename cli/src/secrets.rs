//! The Secret kind in the CLI: its `get` row, its describe page (keys and fingerprints, as the API
//! shows them: never a value), and `kedge create secret` from literals, files and `.env` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Args;
use kedge_crds::event::Event;
use kedge_crds::{Resource, Secret};
use reqwest::Method;

use crate::base::{connect, resource_path};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult, Exit};
use crate::kinds::Table;
use crate::objects::Declared;
use crate::output::{self, TableOptions};
use crate::GlobalArgs;

/// `kedge create secret NAME [--from-literal K=V]... [--from-file [K=]PATH]... [--from-env-file PATH]...`
#[derive(Args)]
pub struct CreateSecretArgs {
    pub name: String,
    /// `KEY=VALUE`; the value as written (mind your shell's history).
    #[arg(long = "from-literal")]
    pub literals: Vec<String>,
    /// `KEY=PATH` or `PATH` (the key is then the file's name): the file's text is the value.
    #[arg(long = "from-file")]
    pub files: Vec<String>,
    /// A `.env` file, `KEY=VALUE` a line (`#` comments, `export`, quotes as Docker and Compose read
    /// them): each line a key of the secret.
    #[arg(long = "from-env-file")]
    pub env_files: Vec<PathBuf>,
    /// Replace the secret when it exists (without it, an existing secret is an error).
    #[arg(long)]
    pub update: bool,
    /// Check everything and say what would happen; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl std::fmt::Debug for CreateSecretArgs {
    /// As derived, with `literals` redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let CreateSecretArgs { name, literals, files, env_files, update, dry_run } = self;
        f.debug_struct("CreateSecretArgs")
            .field("name", name)
            .field(
                "literals",
                &literals
                    .iter()
                    .map(|l| format!("{}={}", l.split('=').next().unwrap_or(""), kedge_crds::REDACTED))
                    .collect::<Vec<_>>(),
            )
            .field("files", files)
            .field("env_files", env_files)
            .field("update", update)
            .field("dry_run", dry_run)
            .finish()
    }
}

impl Table for Secret {
    const NOUN: &'static str = "secret";

    fn columns(options: TableOptions) -> Vec<&'static str> {
        let mut columns = if options.namespaces { vec!["NAMESPACE"] } else { Vec::new() };
        columns.extend(["NAME", "KEYS", "AGE"]);
        columns
    }

    fn cells(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        let mut row = if options.namespaces { vec![self.metadata.namespace.clone()] } else { Vec::new() };
        row.push(self.metadata.name.clone());
        row.push(self.data.len().to_string());
        row.push(output::age(self.metadata.creation_timestamp.as_deref(), now));
        row
    }
}

impl Declared for Secret {
    /// The metadata and each key with the value as the API shows it (`<redacted>` and a
    /// fingerprint), then the events.
    async fn describe_page(&self, _: &Client, events: &[Event], now: DateTime<Utc>) -> CliResult<String> {
        Ok(describe_secret(self, events, now))
    }
}

/// The page `kedge describe secret NAME` prints.
pub(crate) fn describe_secret(secret: &Secret, events: &[Event], now: DateTime<Utc>) -> String {
    let meta = &secret.metadata;
    let mut out = output::page_start(meta);
    let created = meta.creation_timestamp.as_deref();
    let created = created.map_or("<none>".to_owned(), |c| format!("{c} ({} ago)", output::age(Some(c), now)));
    out.push_str(&output::field_line("Created", &created));
    out.push_str(&output::field_line(
        "Resource Version",
        meta.resource_version.as_deref().unwrap_or("<none>"),
    ));
    let rows: Vec<Vec<String>> =
        secret.data.iter().map(|(key, shown)| vec![key.clone(), redacted_form(shown)]).collect();
    out.push_str(&output::section("Data", &["KEY", "VALUE"], &rows));
    out.push_str(&output::events_section(events, now));
    out
}

/// What the page shows of a value: the API's redacted form; anything else (never expected from
/// the API) is redacted here too rather than printed.
fn redacted_form(shown: &str) -> String {
    if kedge_crds::secret::is_redacted(shown) {
        shown.to_owned()
    } else {
        kedge_crds::REDACTED.to_owned()
    }
}

/// `kedge create secret`: builds the secret from the sources given, checks it as the API will, and
/// creates it (or replaces it with `--update`). Prints `secret/NAME created|configured|unchanged`,
/// never a value.
pub(crate) async fn create(args: CreateSecretArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let data = secret_data(&args.literals, &args.files, &args.env_files)?;
    let (resolved, client) = connect(global)?;
    let mut secret = Secret::new(args.name.clone(), data);
    secret.metadata.namespace = resolved.namespace.clone();
    let errors = kedge_crds::validate::validate_secret(&secret);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("{}: {}", error.path, error.message);
        }
        return Err(CliError::usage(format!("secret {} is not valid; nothing was changed", args.name)));
    }
    let body = serde_json::to_value(&secret).map_err(crate::base::bad_answer)?;
    let dry = if args.dry_run { "?dryRun=All" } else { "" };
    let answer = if args.update {
        client
            .send(
                Method::PUT,
                &format!("{}{dry}", resource_path::<Secret>(&resolved.namespace, &args.name)),
                Some(&body),
            )
            .await
    } else {
        let path = format!("/api/v1/namespaces/{}/{}{dry}", encode(&resolved.namespace), Secret::PLURAL);
        client.send(Method::POST, &path, Some(&body)).await
    };
    let answer = answer.map_err(|error| match error.exit {
        Exit::Conflict if !args.update => error.hint("replace it with `kedge create secret ... --update`"),
        _ => error,
    })?;
    let suffix = if args.dry_run { " (server dry run)" } else { "" };
    println!("secret/{} {}{suffix}", args.name, answer.outcome.as_deref().unwrap_or("created"));
    Ok(Exit::Ok)
}

/// The secret's data from every source, in order (a later source's key replaces an earlier one's
/// is refused instead: two sources naming one key is a mistake). Errors name the source, the file
/// and the line, never a value.
pub(crate) fn secret_data(
    literals: &[String],
    files: &[String],
    env_files: &[PathBuf],
) -> CliResult<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    let mut add = |key: String, value: String, source: &str| -> CliResult<()> {
        kedge_crds::secret::check_key(&key).map_err(|why| CliError::usage(format!("{source}: {why}")))?;
        if data.insert(key.clone(), value).is_some() {
            return Err(CliError::usage(format!("{source}: key `{key}` is given twice")));
        }
        Ok(())
    };
    for literal in literals {
        let Some((key, value)) = literal.split_once('=') else {
            let key = literal.chars().take_while(|c| !c.is_whitespace()).collect::<String>();
            return Err(CliError::usage(format!("--from-literal {key}...: expected KEY=VALUE")));
        };
        add(key.to_owned(), value.to_owned(), &format!("--from-literal {key}"))?;
    }
    for file in files {
        let (key, path) = match file.split_once('=') {
            Some((key, path)) => (key.to_owned(), PathBuf::from(path)),
            None => {
                let path = PathBuf::from(file);
                let key = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                (key, path)
            }
        };
        let value = read_text(&path, "--from-file")?;
        add(key, value, &format!("--from-file {}", path.display()))?;
    }
    for path in env_files {
        let text = read_text(path, "--from-env-file")?;
        let entries = kedge_crds::secret::parse_env_file(&text).map_err(|errors| {
            // The first errors tell what is wrong; a file of a hundred thousand bad lines need not
            // print them all.
            for error in errors.iter().take(20) {
                eprintln!("{}:{}: {}", path.display(), error.line, error.message);
            }
            CliError::usage(format!("{} error(s) in {}; nothing was changed", errors.len(), path.display()))
        })?;
        for (key, value) in entries {
            add(key, value, &format!("--from-env-file {}", path.display()))?;
        }
    }
    if data.is_empty() {
        return Err(CliError::usage("a secret needs at least one key")
            .hint("give --from-literal KEY=VALUE, --from-file KEY=PATH or --from-env-file PATH"));
    }
    Ok(data)
}

/// The largest file a secret's value or values are read from (1 MiB): eight times what a secret may
/// hold ([`kedge_crds::secret::MAX_SECRET_BYTES`]), room for an env file's comments, so that a file
/// given by mistake (a disk image, a log) is refused without being read.
const MAX_SOURCE_FILE_BYTES: u64 = 1 << 20;

fn read_text(path: &Path, option: &str) -> CliResult<String> {
    let failed = |error: std::io::Error| CliError::usage(format!("{option} {}: {error}", path.display()));
    let size = std::fs::metadata(path).map_err(failed)?.len();
    if size > MAX_SOURCE_FILE_BYTES {
        return Err(CliError::usage(format!(
            "{option} {}: {} KiB, over the {} KiB a secret's source file may have (a secret holds at most {} KiB); nothing was changed",
            path.display(),
            size.div_ceil(1024),
            MAX_SOURCE_FILE_BYTES >> 10,
            kedge_crds::secret::MAX_SECRET_BYTES >> 10
        )));
    }
    let bytes = std::fs::read(path).map_err(failed)?;
    String::from_utf8(bytes).map_err(|_| {
        CliError::usage(format!(
            "{option} {}: not UTF-8 text (a value is an environment variable)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_make_one_secret_and_errors_name_where() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k3n").unwrap();
        let env = dir.path().join("app.env");
        std::fs::write(&env, "# app\nDB_USER=app\nDB_PASSWORD='pa ss'\n").unwrap();
        let data = secret_data(
            &["a=1=2".to_owned()],
            &[format!("api={}", token.display()), token.display().to_string()],
            std::slice::from_ref(&env),
        )
        .unwrap();
        let expected: BTreeMap<String, String> = [
            ("a", "1=2"),
            ("api", "t0k3n"),
            ("token", "t0k3n"),
            ("DB_USER", "app"),
            ("DB_PASSWORD", "pa ss"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(data, expected);

        let error = secret_data(&["nokey".into()], &[], &[]).unwrap_err();
        assert!(error.message.contains("expected KEY=VALUE"), "{}", error.message);
        let error = secret_data(&["a=1".into(), "a=2".into()], &[], &[]).unwrap_err();
        assert!(error.message.contains("`a` is given twice"), "{}", error.message);
        let error = secret_data(&[], &["x=/no/such/file".into()], &[]).unwrap_err();
        assert!(error.message.contains("/no/such/file"), "{}", error.message);
        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, "OK=1\nthis line has no equals\n").unwrap();
        let error = secret_data(&[], &[], std::slice::from_ref(&bad)).unwrap_err();
        assert!(
            error.message.contains("1 error(s) in") && error.message.contains("bad.env"),
            "{}",
            error.message
        );
        assert!(secret_data(&[], &[], &[]).is_err());
    }

    /// The CLI's credential-bearing types (its arguments, contexts, resolved connection) show no
    /// token and no literal value in `Debug`.
    #[test]
    fn debug_of_credentials_is_redacted() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "kedge",
            "--token",
            "tok-4f9a",
            "create",
            "secret",
            "db",
            "--from-literal",
            "password=val-8c1d",
        ])
        .unwrap();
        let context = crate::config::Context { token: Some("tok-4f9a".into()), ..Default::default() };
        let overrides = crate::config::Overrides { token: Some("tok-4f9a".into()), ..Default::default() };
        let resolved = crate::config::Resolved {
            server: "http://127.0.0.1:1".into(),
            token: Some("tok-4f9a".into()),
            namespace: "default".into(),
            certificate_authority: None,
            client_identity: None,
        };
        let shown = format!("{cli:?} {context:?} {overrides:?} {resolved:?}");
        assert!(!shown.contains("tok-4f9a") && !shown.contains("val-8c1d"), "{shown}");
        assert!(shown.contains("password=<redacted>"), "{shown}");
    }

    #[test]
    fn the_describe_page_never_prints_a_value() {
        let mut secret =
            Secret::new("db", [("password".to_owned(), "<redacted> fingerprint:0123".to_owned())].into());
        secret.data.insert("leaked".into(), "plain-value".into());
        let page = describe_secret(&secret, &[], Utc::now());
        assert!(page.contains("password") && page.contains("<redacted> fingerprint:0123"), "{page}");
        assert!(!page.contains("plain-value"), "{page}");
    }
}
