//! Crash hooks for the crash-safety tests: `KEDGE_FAILPOINT=<name>` aborts the process at that point.
//!
//! Compiled in only with the `failpoints` cargo feature; without it the [`fail_point!`] macro
//! expands to nothing. With it, reaching a failpoint whose name equals `KEDGE_FAILPOINT` aborts the
//! process at once (no unwinding, no destructors), which is what an agent killed by SIGKILL or an
//! OOM looks like to Docker.
//!
//! The supervision tests panic instead of aborting: `KEDGE_FAILPOINT=panic-task:NAME[:N]` panics the
//! agent task `NAME` (`scheduler`, `follow-store`, ...; see `agent::supervisor`) when it starts, the
//! first `N` times (every time without `N`); `panic-task:leader[:N]` panics the scheduler while it
//! leads, and `panic-task:reconcile[:N]` panics a reconcile. `panic-task:NAME@FILE` panics once
//! each time `FILE` exists when the point is reached (it removes the file), so that a test chooses
//! the moment. Several are separated by commas.

/// True when this build has the failpoints compiled in.
pub fn compiled() -> bool {
    cfg!(feature = "failpoints")
}

/// The environment variable naming the failpoint to crash at.
pub const ENV: &str = "KEDGE_FAILPOINT";

/// Every failpoint of the safe recreate, in the order they are reached. Tests iterate over them.
pub const RECREATE_FAILPOINTS: &[&str] = &[
    "recreate.after_create",
    "recreate.after_stop_old",
    "recreate.after_rename_old",
    "recreate.after_rename_new",
    "recreate.after_start_new",
    "recreate.after_healthy",
    "recreate.after_remove_old",
];

/// The failpoints of a start-first recreate that differ from [`RECREATE_FAILPOINTS`], in order
/// (`recreate.after_create` and `recreate.after_remove_old` are reached by both; a start-first
/// recreate reaches `retire.after_stop_old` and `recreate.after_remove_old` in the background
/// retirement of its old container, after the recreate itself has returned).
pub const START_FIRST_FAILPOINTS: &[&str] = &[
    "recreate.start_first.after_start_new",
    "recreate.start_first.after_healthy",
    "recreate.start_first.after_retire_old",
    "recreate.start_first.after_rename_new",
    "retire.after_stop_old",
];

/// The failpoints of a rollback, in order.
pub const ROLLBACK_FAILPOINTS: &[&str] = &[
    "rollback.after_new_aside",
    "rollback.after_start_old",
    "rollback.after_rename_old",
    "rollback.after_remove_new",
];

/// Aborts the process when `KEDGE_FAILPOINT` names `name`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|wanted| wanted == name) {
        eprintln!("kedge failpoint {name} reached: aborting");
        std::process::abort();
    }
}

/// Panics when `KEDGE_FAILPOINT` names `panic-task:<task>` and its count is not used up.
#[cfg(feature = "failpoints")]
pub fn panic_task(task: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static PANICKED: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let Ok(wanted) = std::env::var(ENV) else { return };
    for entry in wanted.split(',') {
        let Some(rest) = entry.trim().strip_prefix("panic-task:") else { continue };
        if let Some((name, trigger)) = rest.split_once('@') {
            if name == task && std::fs::remove_file(trigger).is_ok() {
                panic!("kedge failpoint panic-task:{task} reached (triggered by {trigger})");
            }
            continue;
        }
        let (name, limit) = match rest.split_once(':') {
            Some((name, count)) => (name, count.parse::<u64>().ok()),
            None => (rest, None),
        };
        if name != task {
            continue;
        }
        let count = {
            let mut panicked = PANICKED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let counts = panicked.get_or_insert_with(HashMap::new);
            let count = counts.entry(task.to_owned()).or_default();
            if limit.is_some_and(|limit| *count >= limit) {
                return;
            }
            *count += 1;
            *count
        };
        panic!("kedge failpoint panic-task:{task} reached (panic {count})");
    }
}

/// Marks a step boundary that the crash tests can kill the process at.
macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::executor::failpoint::hit($name);
    };
}

pub(crate) use fail_point;
