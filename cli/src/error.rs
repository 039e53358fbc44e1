//! Errors of the CLI: one line, an optional hint, and the documented exit code (docs/cli.md).

use std::fmt;

/// The exit codes of `kedge`, documented in docs/cli.md. Scripts depend on them: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// `diff` found changes (`check`: an update is available).
    Changes = 1,
    /// Bad usage or invalid input (a spec that does not validate, a bad selector).
    Usage = 2,
    NotFound = 3,
    /// The object changed since it was read (optimistic concurrency), or already exists.
    Conflict = 4,
    /// The server cannot be reached, refused the credentials, or failed.
    Server = 5,
    /// `wait` ran out of time.
    Timeout = 6,
}

/// An error to print as `error: MESSAGE` plus `hint: HINT`, then exit with `exit`.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
    /// The fields a server refused (`details` of its answer: path and why), for a command that
    /// knows where each is in its input files to place them there (`kedge apply`).
    pub fields: Vec<(String, String)>,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError { exit, message: message.into(), hint: None, fields: Vec::new() }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::usage(error.to_string())
    }
}

/// The error of an answer the CLI cannot read.
pub(crate) fn bad_answer(error: impl std::fmt::Display) -> CliError {
    CliError::new(Exit::Server, format!("unexpected answer from the server: {error}"))
}

/// An object the server answered, read as `T`. Fields this kedge does not know (the server is a
/// newer kedge, as it is for a while during a fleet's upgrade) are set aside and named once on
/// stderr, instead of failing the command or, in a list, leaving the object out: every type the
/// API takes refuses unknown fields, which is right for what a person writes and wrong for what a
/// newer agent reports.
pub(crate) fn from_server<T: serde::de::DeserializeOwned>(answer: serde_json::Value) -> CliResult<T> {
    let read = kedge_crds::from_value_lenient::<T>(answer).map_err(bad_answer)?;
    if !read.ignored.is_empty() {
        static TOLD: std::sync::Once = std::sync::Once::new();
        TOLD.call_once(|| {
            eprintln!(
                "warning: the server sent fields this kedge does not know ({}); it is probably newer than this CLI, which shows the rest",
                read.ignored.join(", ")
            );
        });
    }
    Ok(read.value)
}
