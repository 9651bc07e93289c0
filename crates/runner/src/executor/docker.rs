//! The docker executor: each job runs in a container of its image, through the Docker
//! engine API on a unix socket.
//!
//! Not built yet: [`DockerExecutor::prepare`] fails every job with
//! `runner_configuration_error` and says so, so that `--executor docker` never hangs.

use futures::FutureExt;
use futures::future::BoxFuture;
use podci_model::payload::JobPayload;
use podci_model::schedule::FailureReason;
use podci_model::script::Shell;

use super::{Executor, JobDirs, Session, StageError};

/// Runs jobs in containers (see the module documentation).
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    /// Path of the engine's unix socket.
    pub socket: std::path::PathBuf,
}

impl DockerExecutor {
    /// The engine at `DOCKER_HOST` (`unix://PATH`) or `/var/run/docker.sock`.
    pub fn from_env() -> DockerExecutor {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(std::path::PathBuf::from))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        DockerExecutor { socket }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &str {
        "docker"
    }

    fn shell(&self) -> Shell {
        Shell::Detect
    }

    fn prepare<'a>(
        &'a self,
        _payload: &'a JobPayload,
        _dirs: &'a JobDirs,
    ) -> BoxFuture<'a, Result<Box<dyn Session + 'a>, StageError>> {
        async move {
            Err(StageError {
                reason: FailureReason::Other("runner_configuration_error".into()),
                message: format!(
                    "the docker executor is not available in this build of podci (engine socket {}); use --executor shell",
                    self.socket.display()
                ),
            })
        }
        .boxed()
    }
}
