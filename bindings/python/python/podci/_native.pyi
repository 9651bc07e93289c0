"""Type stubs of podci's compiled module. Import from ``podci`` and ``podci.image``."""

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, final

__version__: Final[str]

@final
class Diagnostic:
    """One error or warning about the configuration, in GitLab's wording.
    ``str(d)`` is ``FILE:LINE:COLUMN: message``."""

    def __init__(
        self,
        severity: Literal["error", "warning"],
        message: str,
        file: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None: ...
    @property
    def severity(self) -> Literal["error", "warning"]: ...
    @property
    def message(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def column(self) -> int | None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Need:
    """One entry of a job's ``needs:``."""

    @property
    def job(self) -> str: ...
    @property
    def artifacts(self) -> bool: ...
    @property
    def optional(self) -> bool: ...
    @property
    def external(self) -> bool: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Job:
    """A job as configured (``Pipeline.jobs``) or as created for one commit
    (``Pipeline.evaluate``)."""

    @property
    def name(self) -> str:
        """The job name; for an evaluated ``parallel`` job the instance name."""
    @property
    def job(self) -> str:
        """The configured job this is (``name`` unless a ``parallel`` instance)."""
    @property
    def stage(self) -> str: ...
    @property
    def when(self) -> str: ...
    @property
    def allow_failure(self) -> bool: ...
    @property
    def needs(self) -> list[Need] | None:
        """``needs:``, or ``None`` when the job follows stage order."""
    @property
    def image(self) -> str | None: ...
    @property
    def variables(self) -> dict[str, str]:
        """Configured: the ``variables:`` block. Evaluated: every variable the job gets."""
    @property
    def rules(self) -> list[Any] | None: ...
    @property
    def config(self) -> dict[str, Any]:
        """The whole job configuration with ``default:`` applied."""
    @property
    def trigger(self) -> bool: ...
    @property
    def instances(self) -> list[str]: ...
    @property
    def line(self) -> int: ...
    @property
    def id(self) -> int | None: ...
    @property
    def start_in(self) -> int | None: ...
    @property
    def evaluated(self) -> bool: ...

@final
class Pipeline:
    """A loaded, validated ``.gitlab-ci.yml``. Use ``podci.load`` to make one."""

    @property
    def stages(self) -> list[str]: ...
    @property
    def jobs(self) -> list[Job]: ...
    @property
    def errors(self) -> list[Diagnostic]: ...
    @property
    def warnings(self) -> list[Diagnostic]: ...
    @property
    def diagnostics(self) -> list[Diagnostic]: ...
    @property
    def valid(self) -> bool: ...
    @property
    def included(self) -> list[str]: ...
    @property
    def file(self) -> str: ...
    def job(self, name: str) -> Job | None: ...
    def merged(self) -> dict[str, Any]:
        """The merged configuration (includes, ``extends:``, ``!reference`` resolved)."""
    def merged_yaml(self) -> str: ...
    def evaluate(
        self,
        *,
        branch: str | None = None,
        tag: str | None = None,
        source: str = "push",
        variables: Mapping[str, str] | None = None,
        changed_files: list[str] | None = None,
        default_branch: str = "main",
        existing_files: list[str] | None = None,
        sha: str | None = None,
        protected: bool = False,
        merge_request: tuple[str, str] | None = None,
    ) -> list[Job]:
        """The jobs GitLab would create for a commit. Raises ``PipelineError``."""
    def payload(self, job: Job | str, *, token: str = "podci-local-job-token") -> dict[str, Any]:
        """The ``POST /api/v4/jobs/request`` payload for ``job``. Raises ``PipelineError``."""
    def raise_for_errors(self) -> None: ...

def load_text(name: str, text: str, include_dir: str | None = None) -> Pipeline: ...

@final
class WriteReport:
    """What writing an image did."""

    @property
    def reference(self) -> str: ...
    @property
    def digest(self) -> str | None: ...
    @property
    def blobs_uploaded(self) -> int: ...
    @property
    def blobs_mounted(self) -> int: ...
    @property
    def blobs_existing(self) -> int: ...

def image_append(
    base: str | None,
    layers: list[tuple[str, str | None]],
    tag: str,
    *,
    extra_tags: list[str],
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    env: list[tuple[str, str]],
    workdir: str | None,
    user: str | None,
    labels: list[tuple[str, str]],
    expose: list[str],
    mtime: int,
    created: str | None,
    platform: str | None,
    insecure_registries: list[str],
    parallel: int,
    chunk_size: int | None,
    username: str | None,
    password: str | None,
) -> WriteReport: ...
def image_copy(
    src: str,
    dst: str,
    *,
    extra_tags: list[str],
    platform: str | None,
    insecure_registries: list[str],
    parallel: int,
    chunk_size: int | None,
    username: str | None,
    password: str | None,
) -> WriteReport: ...
def image_inspect(
    reference: str,
    *,
    platform: str | None,
    insecure_registries: list[str],
    username: str | None,
    password: str | None,
) -> dict[str, Any]: ...

@final
class Cancel:
    """Cancels a running ``podci.run`` from another thread."""

    def __init__(self) -> None: ...
    def cancel(self) -> None:
        """No new job starts; running jobs get their ``after_script``."""
    @property
    def cancelled(self) -> bool: ...

@final
class JobResult:
    """One job of a finished local pipeline."""

    @property
    def name(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def status(self) -> str:
        """GitLab's status: ``success``, ``failed``, ``canceled``, ``skipped``, ``manual``, ..."""
    @property
    def allowed_failure(self) -> bool: ...
    @property
    def duration(self) -> float | None:
        """Seconds the last attempt took; ``None`` when the job never started."""
    @property
    def attempts(self) -> int: ...
    @property
    def failure_reason(self) -> str | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def log_path(self) -> str | None:
        """The raw trace file (ANSI colours and section markers included)."""
    @property
    def log(self) -> str:
        """The trace as a person reads it."""
    @property
    def ok(self) -> bool:
        """Succeeded, or failed with ``allow_failure``."""

@final
class PipelineResult:
    """A finished local pipeline."""

    @property
    def created(self) -> bool:
        """Whether ``workflow:rules`` created the pipeline (when not, nothing ran)."""
    @property
    def pipeline_id(self) -> int: ...
    @property
    def status(self) -> str:
        """GitLab's pipeline status: ``success``, ``failed``, ``canceled``, ``skipped``, ..."""
    @property
    def canceled(self) -> bool: ...
    @property
    def has_warnings(self) -> bool: ...
    @property
    def ref_name(self) -> str: ...
    @property
    def tag(self) -> bool: ...
    @property
    def sha(self) -> str: ...
    @property
    def logs_dir(self) -> str: ...
    @property
    def jobs(self) -> list[JobResult]: ...
    @property
    def ok(self) -> bool:
        """``status == "success"``."""
    def job(self, name: str) -> JobResult | None: ...

def run_pipeline(
    project: str,
    *,
    file: str | None,
    jobs: list[str],
    variables: list[tuple[str, str]],
    executor: str,
    concurrency: int | None,
    on_log: Callable[[str, str], object] | None,
    cancel: Cancel | None,
    branch: str | None,
    tag: str | None,
    source: str,
    needs: bool,
    manual: bool,
    cache_dir: str | None,
    work_dir: str | None,
    keep: bool,
    with_dirty: bool,
) -> PipelineResult: ...
def pod_for(
    payload_json: str,
    *,
    config_json: str | None,
    config_toml: str | None,
    runner_token: str,
    concurrent_id: int,
    suffix: str,
    now_unix: int,
    job_url: str | None,
) -> dict[str, Any]: ...

@final
class AppliedObject:
    """One object sent to the API server. ``str()`` is ``kubectl apply``'s line."""

    @property
    def api_version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def action(self) -> Literal["created", "configured", "unchanged"]: ...
    @property
    def text(self) -> str: ...

@final
class RolloutStatus:
    """A workload's rollout."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def done(self) -> bool: ...
    @property
    def message(self) -> str: ...

@final
class DeployResult:
    """What ``podci.deploy`` did."""

    @property
    def objects(self) -> list[AppliedObject]: ...
    @property
    def rollouts(self) -> list[RolloutStatus]: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def cluster(self) -> bool:
        """Whether an API server was asked (not for a dry run without a cluster)."""
    @property
    def diff(self) -> str: ...
    @property
    def rendered(self) -> str: ...

def deploy(
    paths: list[str],
    *,
    images: list[tuple[str, str]],
    namespace: str | None,
    wait: bool,
    timeout: float,
    dry_run: bool,
    kubeconfig: str | None,
    context: str | None,
    on_progress: Callable[[str], object] | None,
) -> DeployResult: ...
