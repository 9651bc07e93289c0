"""Type stubs of podci's compiled module. Import from ``podci`` and ``podci.image``."""

from collections.abc import Mapping
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
