//! Which executor runs a runner's jobs: the seam between the job manager and the
//! executors (`executor/`: shell; podci-k8s: kubernetes). The manager only sees
//! [`Executor`](crate::manager::Executor); this module adapts each concrete executor to it.

use std::sync::Arc;

use crate::config::{ExecutorKind, RunnerConfig};
use crate::manager::{Executor, ExecutorFactory};

struct Factory;

impl ExecutorFactory for Factory {
    fn executor(&self, runner: &RunnerConfig) -> Result<Arc<dyn Executor>, String> {
        match runner.executor {
            ExecutorKind::Shell => Err("the shell executor is not in this build yet (issue 7)".into()),
            ExecutorKind::Kubernetes => {
                Err("executor = \"kubernetes\" is not wired to podci-k8s yet; use shell".into())
            }
            ExecutorKind::Docker => Err("podci has no docker executor; use shell or kubernetes".into()),
        }
    }
}

/// The executors this build offers.
pub fn factory() -> Arc<dyn ExecutorFactory> {
    Arc::new(Factory)
}
