//! Crash hooks for the crash-safety tests: `KEDGE_FAILPOINT=<name>` aborts the process at that point.
//!
//! Compiled in only with the `failpoints` cargo feature; without it the [`fail_point!`] macro
//! expands to nothing. With it, reaching a failpoint whose name equals `KEDGE_FAILPOINT` aborts the
//! process at once (no unwinding, no destructors), which is what an agent killed by SIGKILL or an
//! OOM looks like to Docker.

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

/// Marks a step boundary that the crash tests can kill the process at.
macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::executor::failpoint::hit($name);
    };
}

pub(crate) use fail_point;
