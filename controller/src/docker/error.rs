//! The one error type of the Docker driver, with bollard's errors mapped onto kedge's categories.

use std::time::Duration;

/// Boxed source error, so bollard's error type never becomes part of kedge's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to the Docker Engine.
///
/// The variants are the decisions a caller makes: `NotFound` (gone: create it or forget it),
/// `Conflict` (a name in use or a state that forbids the call), `Engine` (the engine refused:
/// report it), `Transport` (could not talk to the engine: retry with backoff), `Timeout`.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine answered 404: no such container, image, network or exec.
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The engine answered 409: the name is in use, or the object's state forbids the call.
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// Any other error status from the engine.
    #[error("docker engine answered {status}: {message}")]
    Engine { status: u16, message: String },
    /// An error the engine reported inside a stream (pull progress, exec output).
    #[error("docker stream error: {message}")]
    Stream { message: String },
    /// The engine cannot do what was asked (Podman's API where Docker's is needed, for one).
    #[error("{message}")]
    Unsupported { message: String },
    /// The engine could not be reached, or its answer could not be read.
    #[error("docker transport error")]
    Transport {
        #[source]
        source: BoxError,
    },
    /// A deadline kedge (or the client's request timeout) set was reached.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// DOCKER_HOST names a scheme kedge cannot use.
    #[error("cannot connect to docker host {host:?}")]
    Connect {
        host: String,
        #[source]
        source: BoxError,
    },
    /// The engine's answer lacked something kedge relies on (e.g. an inspect without an ID).
    #[error("unexpected answer from the docker engine: {message}")]
    Unexpected { message: String },
    /// kedge refused the call on purpose (e.g. removing an image that containers still use).
    #[error("refused: {message}")]
    Refused { message: String },
}

impl DockerError {
    /// True for a 404 from the engine.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }

    /// True for a 409 from the engine.
    pub fn is_conflict(&self) -> bool {
        matches!(self, DockerError::Conflict { .. })
    }
}

impl From<bollard::errors::Error> for DockerError {
    fn from(error: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match error {
            B::DockerResponseServerError { status_code: 404, message } => DockerError::NotFound { message },
            B::DockerResponseServerError { status_code: 409, message } => DockerError::Conflict { message },
            B::DockerResponseServerError { status_code, message } => {
                DockerError::Engine { status: status_code, message }
            }
            B::DockerStreamError { error } => DockerError::Stream { message: error },
            B::RequestTimeoutError => {
                DockerError::Timeout { what: "a docker API request".to_string(), after: Duration::ZERO }
            }
            other => DockerError::Transport { source: Box::new(other) },
        }
    }
}

/// Result alias of the Docker driver.
pub type DockerResult<T> = Result<T, DockerError>;
