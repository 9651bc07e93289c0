//! Builds the `podci` wheel with maturin, installs it into a fresh virtual environment
//! under the target directory, and runs the pytest suite (and `mypy --strict` on the
//! examples) against the installed package, so that `cargo test --workspace` tests what
//! users install rather than the source tree.
//!
//! Needs python3 (3.11+), maturin, pytest and mypy (.ci/setup.d/60-python.sh). A missing
//! tool fails the test when `CI` is set and skips it loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Fails under CI, skips loudly elsewhere; returns whether the tool works.
fn require(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let msg = format!(
            "{program} {} does not run; install it with .ci/setup.d/60-python.sh",
            args.join(" ")
        );
        assert!(!in_ci(), "{msg}");
        eprintln!("!!!!! SKIPPING the Python package tests: {msg} !!!!!");
    }
    ok
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(what: &str, cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(show(what, &out))
    }
}

/// The venv's python with the freshly built wheel installed, built once per test binary.
/// `None` when the tools are missing outside CI.
fn installed() -> Option<&'static PathBuf> {
    static VENV: OnceLock<Option<Result<PathBuf, String>>> = OnceLock::new();
    let result = VENV.get_or_init(|| {
        if !(require(
            "python3",
            &["-c", "import sys; assert sys.version_info >= (3, 11)"],
        ) && require("maturin", &["--version"])
            && require("python3", &["-m", "pytest", "--version"])
            && require("python3", &["-m", "mypy", "--version"]))
        {
            return None;
        }
        Some(build_and_install())
    });
    match result {
        None => None,
        Some(Ok(python)) => Some(python),
        Some(Err(e)) => panic!("{e}"),
    }
}

/// `<target>`: `CARGO_TARGET_TMPDIR` is `<target>/tmp`.
fn workspace_target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or_else(|| tmp.join("wheel-target"), Path::to_path_buf)
}

fn build_and_install() -> Result<PathBuf, String> {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("podci-python");
    let wheels = work.join("wheels");
    let venv = work.join("venv");
    for d in [&wheels, &venv] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| format!("removing {}: {e}", d.display()))?;
        }
    }
    // The workspace's own target directory and dev profile: the wheel links the runner
    // library, podci-k8s and the rest, which `cargo test --workspace` has just built
    // there, so only pyo3 and this crate compile again (a target directory of its own
    // meant a second full build of every dependency, minutes on CI's two cores). Cargo
    // releases the directory's lock before it runs test binaries, so this nested build
    // does not wait for the cargo running it.
    run(
        "maturin build",
        Command::new("maturin")
            .arg("build")
            .arg("--manifest-path")
            .arg(manifest_dir().join("Cargo.toml"))
            .arg("--out")
            .arg(&wheels)
            .arg("--interpreter")
            .arg("python3")
            .arg("--quiet")
            .env("CARGO_TARGET_DIR", workspace_target_dir()),
    )?;
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| format!("{}: {e}", wheels.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("maturin left no wheel in {}", wheels.display()))?;
    let name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains("abi3") {
        return Err(format!(
            "{name} is not an abi3 wheel (one wheel for Python 3.11+ expected)"
        ));
    }
    // pytest, mypy and PyYAML come from the system site (60-python.sh installs them);
    // podci itself only from the wheel.
    run(
        "python3 -m venv",
        Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv),
    )?;
    let python = venv.join("bin/python");
    run(
        "pip install <wheel>",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--force-reinstall",
                "--disable-pip-version-check",
            ])
            .arg(&wheel),
    )?;
    Ok(python)
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.filter_map(Result::ok) {
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                todo.push(e.path());
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

/// The fake Kubernetes API server (tests/fake-kube) for the deploy tests. `cargo test
/// --workspace` has built its binary already, with the workspace's feature set; that one
/// is used when it is newer than the fake's sources, because a `cargo build -p` of it
/// alone resolves other features and rebuilds a good part of the dependency tree.
fn fake_kube() -> Result<PathBuf, String> {
    let target = workspace_target_dir();
    let bin = target.join("debug").join("fake-kube");
    let sources = manifest_dir().join("../../tests/fake-kube");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let manifest = std::fs::metadata(sources.join("Cargo.toml"))
        .and_then(|m| m.modified())
        .ok();
    if let (Some(built), Some(src)) = (built, newest(&sources.join("src")).max(manifest))
        && built > src
    {
        return Ok(bin);
    }
    run(
        "cargo build -p podci-fake-kube",
        Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "podci-fake-kube", "--bin", "fake-kube"])
            .arg("--manifest-path")
            .arg(manifest_dir().join("../../Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target),
    )?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("cargo built no {}", bin.display()))
    }
}

/// Runs a module of the venv's python from a directory outside the source tree, so the
/// only `podci` it can import is the installed one.
fn python_module(python: &Path, args: &[&str]) -> Output {
    python_module_with(python, args, &[])
}

fn python_module_with(python: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let cwd = Path::new(env!("CARGO_TARGET_TMPDIR"));
    Command::new(python)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(cwd)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()))
}

#[test]
fn pytest_suite_passes_against_the_installed_wheel() {
    let Some(python) = installed() else { return };
    let fake = fake_kube().unwrap_or_else(|e| panic!("{e}"));
    let tests = manifest_dir().join("tests");
    let tests = tests.to_string_lossy();
    let out = python_module_with(
        python,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            &tests,
            &tests,
        ],
        &[("PODCI_FAKE_KUBE", &fake)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{}", show("pytest", &out));
    // A run where everything skipped would prove nothing.
    assert!(text.contains(" passed"), "pytest ran no tests:\n{text}");
    if in_ci() {
        assert!(!text.contains("skipped"), "tests were skipped under CI:\n{text}");
    }
}

#[test]
fn examples_pass_mypy_strict_against_the_installed_stubs() {
    let Some(python) = installed() else { return };
    let examples = manifest_dir().join("examples");
    let out = python_module(
        python,
        &[
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            &examples.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", show("mypy --strict", &out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Success: no issues found"), "{text}");
}
