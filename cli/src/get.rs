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

/// `kedge get all`: the tables of containers, ContainerSets and GitSources one after the other, each
/// name written `KIND/NAME` as kubectl does; kinds with nothing to show are left out.
pub(crate) async fn all(query: &Query<'_>, names: &[String], view: &View) -> CliResult<Exit> {
    if !names.is_empty() {
        return Err(
            CliError::usage("`get all` takes no names").hint("name a kind: `kedge get containers web`")
        );
    }
    if query.watch {
        return Err(CliError::usage("`get all -w` is not supported: watch one kind at a time"));
    }
    let names_only = match &view.output {
        None | Some(GetOutput::Format(OutputFormat::Wide)) => false,
        Some(GetOutput::Format(OutputFormat::Name)) => true,
        Some(_) => {
            return Err(CliError::usage("`get all` prints tables or names (-o wide, -o name)")
                .hint("for json, yaml or templates, get one kind at a time"))
        }
    };
    let sections = [
        section::<kedge_crds::Container>(query, view, names_only).await?,
        section::<kedge_crds::ContainerSet>(query, view, names_only).await?,
        section::<kedge_crds::GitSource>(query, view, names_only).await?,
    ];
    let printed: Vec<String> = sections.into_iter().flatten().collect();
    if printed.is_empty() {
        eprintln!("No resources found in {}.", crate::kinds::namespace_words(query));
    } else {
        let separator = if names_only { "" } else { "\n" };
        print!("{}", printed.join(separator));
    }
    Ok(Exit::Ok)
}

/// One kind's part of `get all`, or nothing when it has no objects.
async fn section<K: Kind>(query: &Query<'_>, view: &View, names_only: bool) -> CliResult<Option<String>> {
    let mut listed = K::list(query).await?;
    if listed.items.is_empty() && listed.unreadable_rows.is_empty() {
        return Ok(None);
    }
    if let Some(path) = &view.sort_by {
        listed.items.sort_by(|(a, _), (b, _)| template::compare_by(path, a, b));
    }
    if names_only {
        return Ok(Some(listed.items.iter().map(|(_, k)| format!("{}/{}\n", K::WORD, k.name())).collect()));
    }
    let options = query.options;
    let mut rows = rows_of(listed.items.iter().map(|(_, k)| k), &listed.unreadable_rows, options, Utc::now());
    // NAME follows NAMESPACE when every namespace is listed.
    let name_column = usize::from(options.namespaces);
    for row in &mut rows {
        if let Some(name) = row.get_mut(name_column) {
            *name = format!("{}/{name}", K::WORD);
        }
    }
    let text = output::table(&K::header(options), &rows);
    Ok(Some(if view.no_headers {
        text.split_once('\n').map_or("", |(_, rest)| rest).to_owned()
    } else {
        text
    }))
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
