//! `kedge get KIND [NAME]` and `get -w`, written once over the per-kind table of `kinds.rs`.

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::client::encode;
use crate::error::{CliError, CliResult, Exit};
use crate::kinds::{Follow, Kind, Query, POLL_PERIOD};
use crate::output::{self, TableOptions};
use crate::OutputFormat;

/// Prints one kind's objects in the asked format; with `-w`, follows them after.
pub(crate) async fn get<K: Kind>(query: &Query<'_>, format: Option<OutputFormat>) -> CliResult<Exit> {
    let table_format = matches!(format, None | Some(OutputFormat::Wide));
    if query.watch && K::FOLLOW == Follow::Poll {
        if !table_format {
            let plural = format!("{}s", K::WORD);
            return Err(CliError::usage(format!(
                "`get {plural} -w` prints a table: use no `-o`, or `-o wide`"
            )));
        }
        return poll::<K>(query).await;
    }
    let listed = K::list(query).await?;
    let options = query.options;
    let rows = rows_of(listed.items.iter().map(|(_, k)| k), &listed.unreadable_rows, options, Utc::now());
    let header = K::header(options);
    let following = query.watch && K::FOLLOW == Follow::Stream;
    match format {
        None | Some(OutputFormat::Wide) => {
            let page = match (query.name, listed.items.as_slice()) {
                (Some(_), [(_, one)]) => one.page(),
                _ => None,
            };
            if let Some(page) = page {
                print!("{page}");
            } else if rows.is_empty() && !following {
                eprintln!("{}", K::nothing_found(query));
            } else {
                print!("{}", output::table(&header, &rows));
            }
        }
        Some(OutputFormat::Name) => {
            if !K::NAMED {
                let plural = format!("{}s", K::WORD);
                return Err(CliError::usage(format!("{plural} have no names to print"))
                    .hint("use -o json or -o yaml"));
            }
            listed.items.iter().for_each(|(_, k)| println!("{}/{}", K::WORD, k.name()))
        }
        Some(OutputFormat::Json | OutputFormat::Yaml) => {
            let objects: Vec<Value> = listed.items.iter().map(|(raw, _)| raw.clone()).collect();
            if let Some(value) = K::structured(objects, query) {
                if format == Some(OutputFormat::Json) {
                    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                } else {
                    print!("{}", output::to_yaml(&value));
                }
            }
        }
    }
    if !following {
        return Ok(Exit::Ok);
    }
    // The streamed rows keep the first table's columns (at least STREAM_MIN_WIDTH once there are rows).
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (index, cell) in row.iter().enumerate() {
            if index < widths.len() {
                widths[index] = widths[index].max(cell.len()).max(K::STREAM_MIN_WIDTH);
            }
        }
    }
    let _ = std::io::stdout().flush();
    let path = K::watch_path(query, listed.revision);
    query
        .client
        .stream(&path, |event| {
            match format {
                None | Some(OutputFormat::Wide) => {
                    let object: K = event.object()?;
                    println!("{}", output::table_row(&widths, &object.row(options, Utc::now())));
                }
                Some(OutputFormat::Name) => {
                    let object: K = event.object()?;
                    println!("{}/{}", K::WORD, object.name());
                }
                Some(OutputFormat::Json) => {
                    println!("{}", serde_json::to_string(&event.object).unwrap_or_default())
                }
                Some(OutputFormat::Yaml) => print!("---\n{}", output::to_yaml(&event.object)),
            }
            let _ = std::io::stdout().flush();
            Ok(true)
        })
        .await?;
    Ok(Exit::Ok)
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
async fn poll<K: Kind>(query: &Query<'_>) -> CliResult<Exit> {
    let options = query.options;
    let mut shown: HashMap<String, Value> = HashMap::new();
    let mut header = true;
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

pub(crate) fn table_options(format: Option<OutputFormat>, all_namespaces: bool) -> TableOptions {
    TableOptions { wide: format == Some(OutputFormat::Wide), namespaces: all_namespaces }
}
