//! `kedge get KIND [NAME]` and `get -w`, written once over the per-kind table of `kinds.rs`.

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::client::encode;
use crate::error::{CliError, CliResult, Exit};
use crate::kinds::{Follow, Kind, Listed, Query, POLL_PERIOD};
use crate::output::{self, TableOptions};
use crate::template::{self, Path};
use crate::{GetOutput, OutputFormat};

/// How `get` shows what it lists: `-o`, `--sort-by`, `--no-headers`.
pub(crate) struct View {
    pub output: Option<GetOutput>,
    pub sort_by: Option<Path>,
    pub no_headers: bool,
}

impl View {
    fn is_table(&self) -> bool {
        matches!(self.output, None | Some(GetOutput::Format(OutputFormat::Wide)))
    }
}

/// Prints one kind's objects (all of them, or those `names` names) in the asked view; with `-w`,
/// follows them after.
pub(crate) async fn get<K: Kind>(query: &Query<'_>, names: &[String], view: &View) -> CliResult<Exit> {
    if query.watch && names.len() > 1 {
        return Err(CliError::usage("`get -w` follows one name or all: name one, or none"));
    }
    if query.watch && K::FOLLOW == Follow::Poll {
        if !view.is_table() {
            let plural = format!("{}s", K::WORD);
            return Err(CliError::usage(format!(
                "`get {plural} -w` prints a table: use no `-o`, or `-o wide`"
            )));
        }
        let one = Query { name: names.first().map(String::as_str), ..query.clone() };
        return poll::<K>(&one, view.no_headers).await;
    }
    // Each name is looked up on its own; those not found are reported after the ones found.
    let (mut listed, mut missing) = (Listed::<K>::of(Vec::new()), Vec::new());
    let single = (names.len() == 1).then(|| names[0].as_str());
    if names.is_empty() {
        listed = K::list(query).await?;
    } else {
        for name in names {
            match K::list(&Query { name: Some(name), ..query.clone() }).await {
                Ok(found) => {
                    listed.revision = listed.revision.max(found.revision);
                    listed.items.extend(found.items);
                    listed.unreadable_rows.extend(found.unreadable_rows);
                }
                Err(error) if error.exit == Exit::NotFound && names.len() > 1 => missing.push(error),
                Err(error) => return Err(error),
            }
        }
    }
    if let Some(path) = &view.sort_by {
        listed.items.sort_by(|(a, _), (b, _)| template::compare_by(path, a, b));
    }
    let query = &Query { name: single, ..query.clone() };
    let options = query.options;
    let rows = rows_of(listed.items.iter().map(|(_, k)| k), &listed.unreadable_rows, options, Utc::now());
    let header = K::header(options);
    let following = query.watch && K::FOLLOW == Follow::Stream;
    // A table that rows will be streamed under is printed with the widths the stream uses.
    let min_width = if following { K::STREAM_MIN_WIDTH } else { 0 };
    let table = |header: &[&str], rows: &[Vec<String>]| {
        let text = output::table_at_least(header, rows, min_width);
        if view.no_headers {
            print!("{}", text.split_once('\n').map_or("", |(_, rest)| rest));
        } else {
            print!("{text}");
        }
    };
    match &view.output {
        None | Some(GetOutput::Format(OutputFormat::Wide)) => {
            let page = match (query.name, listed.items.as_slice()) {
                (Some(_), [(_, one)]) => one.page(),
                _ => None,
            };
            if let Some(page) = page {
                print!("{page}");
            } else if rows.is_empty() && !following {
                if missing.is_empty() {
                    eprintln!("{}", K::nothing_found(query));
                }
            } else {
                table(&header, &rows);
            }
        }
        Some(GetOutput::Format(OutputFormat::Name)) => {
            if !K::NAMED {
                let plural = format!("{}s", K::WORD);
                return Err(CliError::usage(format!("{plural} have no names to print"))
                    .hint("use -o json or -o yaml"));
            }
            listed.items.iter().for_each(|(_, k)| println!("{}/{}", K::WORD, k.name()))
        }
        Some(GetOutput::Format(format @ (OutputFormat::Json | OutputFormat::Yaml))) => {
            let objects: Vec<Value> = listed.items.iter().map(|(raw, _)| raw.clone()).collect();
            if let Some(value) = K::structured(objects, query) {
                if *format == OutputFormat::Json {
                    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                } else {
                    print!("{}", output::to_yaml(&value));
                }
            }
        }
        Some(GetOutput::JsonPath(template)) => {
            let objects: Vec<Value> = listed.items.iter().map(|(raw, _)| raw.clone()).collect();
            if let Some(value) = K::structured(objects, query) {
                let text = template.render(&value);
                // As kubectl: the template's text, with a line end unless it wrote its own.
                if text.ends_with('\n') {
                    print!("{text}")
                } else {
                    println!("{text}")
                }
            }
        }
        Some(GetOutput::Columns(columns)) => {
            let rows: Vec<Vec<String>> = listed.items.iter().map(|(raw, _)| columns.row(raw)).collect();
            if !rows.is_empty() || following {
                table(&columns.header(), &rows);
            } else if missing.is_empty() {
                eprintln!("{}", K::nothing_found(query));
            }
        }
    }
    if let Some(error) = report_missing(missing) {
        return Err(error);
    }
    if !following {
        return Ok(Exit::Ok);
    }
    // The streamed rows keep the first table's columns: the same widths, computed the same way.
    let stream_header: Vec<&str> = match &view.output {
        Some(GetOutput::Columns(columns)) => columns.header(),
        _ => header.clone(),
    };
    let first_rows = match &view.output {
        Some(GetOutput::Columns(columns)) => listed.items.iter().map(|(raw, _)| columns.row(raw)).collect(),
        _ => rows,
    };
    let widths = output::column_widths(&stream_header, &first_rows, min_width);
    let _ = std::io::stdout().flush();
    let path = K::watch_path(query, listed.revision);
    query
        .client
        .stream(&path, |event| {
            match &view.output {
                None | Some(GetOutput::Format(OutputFormat::Wide)) => {
                    let object: K = event.object()?;
                    println!("{}", output::table_row(&widths, &object.row(options, Utc::now())));
                }
                Some(GetOutput::Format(OutputFormat::Name)) => {
                    let object: K = event.object()?;
                    println!("{}/{}", K::WORD, object.name());
                }
                Some(GetOutput::Format(OutputFormat::Json)) => {
                    println!("{}", serde_json::to_string(&event.object).unwrap_or_default())
                }
                Some(GetOutput::Format(OutputFormat::Yaml)) => {
                    print!("---\n{}", output::to_yaml(&event.object))
                }
                Some(GetOutput::JsonPath(template)) => {
                    let text = template.render(&event.object);
                    if text.ends_with('\n') {
                        print!("{text}")
                    } else {
                        println!("{text}")
                    }
                }
                Some(GetOutput::Columns(columns)) => {
                    println!("{}", output::table_row(&widths, &columns.row(&event.object)))
                }
            }
            let _ = std::io::stdout().flush();
            Ok(true)
        })
        .await?;
    Ok(Exit::Ok)
}

/// The names `get` did not find: printed after what it found, and the command's error (exit 3).
fn report_missing(mut missing: Vec<CliError>) -> Option<CliError> {
    let last = missing.pop()?;
    for error in &missing {
        eprintln!("error: {}", error.message);
    }
    Some(last)
}

/// The rows of a kind's table: its objects', then those of the objects that cannot be read.
pub(crate) fn rows_of<'a, K: Kind + 'a>(
    objects: impl Iterator<Item = &'a K>,
    unreadable_rows: &[Vec<String>],
    options: TableOptions,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = objects.map(|k| k.row(options, now)).collect();
    rows.extend(unreadable_rows.iter().cloned());
    rows
}

/// `-w` of a kind the API cannot stream: the table, then a row whenever an object's fingerprint
/// changes, looked at every [`POLL_PERIOD`], until interrupted.
async fn poll<K: Kind>(query: &Query<'_>, no_headers: bool) -> CliResult<Exit> {
    let options = query.options;
    let mut shown: HashMap<String, Value> = HashMap::new();
    let mut header = !no_headers;
    loop {
        let listed = K::list(query).await?;
        let now = Utc::now();
        let mut rows = Vec::new();
        for (_, object) in &listed.items {
            let row = object.row(options, now);
            let fingerprint = object.fingerprint(&row, options);
            let identity = object.identity();
            if shown.get(&identity) != Some(&fingerprint) {
                shown.insert(identity, fingerprint);
                rows.push(row);
            }
        }
        if !rows.is_empty() {
            let table = output::table(&K::header(options), &rows);
            let body =
                if header { table.as_str() } else { table.split_once('\n').map_or("", |(_, rest)| rest) };
            print!("{body}");
            let _ = std::io::stdout().flush();
            header = false;
        }
        tokio::time::sleep(POLL_PERIOD).await;
    }
}

/// `labelSelector=...` for a query, or nothing.
pub(crate) fn selector_query(selector: Option<&str>) -> String {
    selector.map(|s| format!("labelSelector={}", encode(s))).unwrap_or_default()
}

pub(crate) fn table_options(output: Option<&GetOutput>, all_namespaces: bool) -> TableOptions {
    TableOptions {
        wide: matches!(output, Some(GetOutput::Format(OutputFormat::Wide))),
        namespaces: all_namespaces,
    }
}
