"""Packaging and deployment artefacts, checked without a Docker engine or a Kubernetes cluster.

- Dockerfile: hadolint; its structure (stages, numeric non-root user, port, healthcheck, OCI
  labels, config path); every file it copies exists and survives .dockerignore. Then its build
  stage is replayed: the COPYs into a temporary context, the RUN commands with the image paths
  (/src, /dist, /opt/runbook-exporter) mapped into a temporary directory. The resulting
  virtualenv is the one the image would ship: `--version`, `--check-config`, a served
  /-/healthy answered by the HEALTHCHECK command itself, and no file written at runtime.
- Kubernetes: core objects against the bundled Kubernetes JSON schemas (kubernetes-validate,
  strict, offline), the CRDs structurally, and the objects against each other.
- systemd: the unit's hardening statically, `systemd-analyze verify` with ExecStart pointing at
  the replayed virtualenv, and `systemd-analyze security` exposure.
- Release metadata: one version, CHANGELOG, LICENSE.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter import __version__
from exporter.config import parse_config
from exporter.demo.pgserver import free_port
from exporter.server import DEFAULT_PORT
from tests.helpers import Scrape, tool

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "runbook-exporter.service"
CONFIG_PATH = "/etc/runbook-exporter/config.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPT = "runbook-exporter"
# sha256 of the Apache License 2.0 text as published at apache.org/licenses/LICENSE-2.0.txt
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


# --- Dockerfile parsing ------------------------------------------------------------------


@dataclass
class Instruction:
    cmd: str
    args: str
    stage: int  # -1 before the first FROM


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    global_args: dict[str, str] = field(default_factory=dict)
    stage_names: list[str | None] = field(default_factory=list)

    def stage(self, index: int) -> list[Instruction]:
        n = len(self.stage_names)
        return [i for i in self.instructions if i.stage == index % n]

    def of(self, cmd: str, stage: int) -> list[str]:
        return [i.args for i in self.stage(stage) if i.cmd == cmd]

    def one(self, cmd: str, stage: int) -> str:
        found = self.of(cmd, stage)
        assert len(found) == 1, f"expected one {cmd} in stage {stage}, found {found}"
        return found[0]

    def env(self, stage: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.of("ENV", stage):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out

    def labels(self, stage: int) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.of("LABEL", stage):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out

    def args_defaults(self, stage: int) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for args in self.of("ARG", stage):
            name, sep, default = args.partition("=")
            out[name] = default if sep else None
        return out


def parse_dockerfile(text: str) -> Dockerfile:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue  # comments may sit inside a continued instruction, too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current.strip():
        logical.append(current)
    df = Dockerfile([])
    stage = -1
    for line in logical:
        cmd, _, args = line.partition(" ")
        cmd, args = cmd.upper(), " ".join(args.split()) if cmd.upper() != "RUN" else args.strip()
        if cmd == "FROM":
            stage += 1
            parts = args.split()
            df.stage_names.append(
                parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            )
        elif cmd == "ARG" and stage == -1:
            name, _, default = args.partition("=")
            df.global_args[name] = default
        df.instructions.append(Instruction(cmd, args, stage))
    return df


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def copy_sources(args: str) -> tuple[list[str], str, dict[str, str]]:
    tokens = shlex.split(args)
    flags = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        flags[key] = value
    if tokens and tokens[0].startswith("["):
        tokens = json.loads(" ".join(tokens))
    return tokens[:-1], tokens[-1], flags


DF = parse_dockerfile(DOCKERFILE.read_text())


def expand(value: str, variables: dict[str, str | None]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2]) or "", value)


# --- .dockerignore (moby/patternmatcher semantics: last match wins, parents count) -------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _glob_regex(pattern)))
    return rules


def in_context(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = Path(relpath).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return not excluded


def context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Files of a COPY source that end up in the build context (repo-relative)."""
    matches = sorted(ROOT.glob(source.rstrip("/"))) if source.strip("/") else [ROOT]
    out = []
    for m in matches:
        files = [m] if m.is_file() else sorted(p for p in m.rglob("*") if p.is_file())
        out += [
            str(f.relative_to(ROOT)) for f in files if in_context(str(f.relative_to(ROOT)), rules)
        ]
    return out


# --- Dockerfile tests --------------------------------------------------------------------


def test_hadolint_clean():
    r = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    bad = subprocess.run(  # the linter really lints: an untagged base image is reported
        [tool("hadolint"), "-"], input="FROM python\n", capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "DL3006" in bad.stdout


def test_dockerfile_is_multi_stage_slim_non_root_and_read_only_friendly():
    assert len(DF.stage_names) >= 2 and DF.stage_names[0] == "build"
    base = expand(DF.one("FROM", -1), {**DF.global_args})  # FROM sees the global ARGs only
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    user = DF.one("USER", -1)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric non-root UID, so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) > 0
    last_user_index = max(i for i, ins in enumerate(DF.stage(-1)) if ins.cmd == "USER")
    assert not [i for i in DF.stage(-1)[last_user_index:] if i.cmd == "RUN"], "RUN after USER"
    env = DF.env(-1)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PATH", "").startswith("/opt/runbook-exporter/bin:")
    assert DF.one("EXPOSE", -1) == str(DEFAULT_PORT)
    assert exec_form(DF.one("ENTRYPOINT", -1)) == [SCRIPT]
    assert SCRIPT in PYPROJECT["project"]["scripts"]
    assert exec_form(DF.one("CMD", -1)) == [f"--config.file={CONFIG_PATH}"]
    # the runtime stage takes only the built virtualenv from the build stage
    copies = [copy_sources(a) for a in DF.of("COPY", -1)]
    assert copies == [(["/opt/runbook-exporter"], "/opt/runbook-exporter", {"from": "build"})]


def test_dockerfile_oci_labels_carry_the_version_from_a_build_arg():
    labels = DF.labels(-1)
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    # `docker build .` without --build-arg still labels the image with the package version
    assert DF.args_defaults(-1)["VERSION"] == __version__


def test_dockerfile_healthcheck_asks_healthy_with_python():
    options, sep, command = DF.one("HEALTHCHECK", -1).partition(" CMD ")
    assert sep and "--timeout=" in options and "--interval=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{DEFAULT_PORT}/-/healthy" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")


def test_dockerfile_copies_exist_and_the_context_is_minimal():
    rules = dockerignore_rules()
    sources = [s for a in DF.of("COPY", 0) for s in copy_sources(a)[0]]
    assert sources, "the build stage copies the project in"
    assert not DF.of("ADD", 0) and not DF.of("ADD", -1), "use COPY"
    for source in sources:
        assert list(ROOT.glob(source.rstrip("/"))), f"COPY {source}: not in the repository"
        assert context_files(source, rules), f"COPY {source}: excluded by .dockerignore"
    for needed in (
        "pyproject.toml",
        "setup.py",
        "README.md",
        "LICENSE",
        "exporter/__init__.py",
        "docs/runbooks/QueueJobsStuck.md",  # the wheel ships the runbooks (setup.py)
        "alerts/alertmanager.yml",
    ):
        assert in_context(needed, rules), needed
    for not_needed in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/conftest.py",
        "docs/deployment.md",
        "alerts/queues.rules.yml",
        "deploy/kubernetes/deployment.yaml",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "runbook_exporter.egg-info/PKG-INFO",
    ):
        assert not in_context(not_needed, rules), f"{not_needed} would be sent to the daemon"


# --- the build stage, replayed -----------------------------------------------------------


@dataclass
class Image:
    """The build stage's output, with image paths mapped under `root`."""

    root: Path
    dist: Path
    venv: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.root,
        )


def map_paths(command: str, root: Path) -> str:
    for image_path in ("/opt/runbook-exporter", "/dist", "/src"):
        command = re.sub(
            rf"(?<![\w/.-]){re.escape(image_path)}(?=[/\s]|$)", f"{root}{image_path}", command
        )
    return command


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("image")
    rules = dockerignore_rules()
    workdir = Path(DF.one("WORKDIR", 0))
    context = root / workdir.relative_to("/")
    for args in DF.of("COPY", 0):
        sources, dest, flags = copy_sources(args)
        assert "from" not in flags
        for source in sources:
            for rel in context_files(source, rules):
                base = Path(source.rstrip("/"))
                inner = Path(rel).relative_to(base) if Path(rel) != base else Path(base.name)
                target = context / dest / inner if dest.endswith("/") else context / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)
    # `python` inside the image is the base interpreter; here it is this test run's
    shim = root / "shim"
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    env = {**os.environ, **DF.env(0), "PATH": f"{shim}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    for run in DF.of("RUN", 0):
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", map_paths(run, root)],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert r.returncode == 0, f"RUN {run}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    runtime_env = DF.env(-1)
    path = expand(map_paths(runtime_env["PATH"], root), {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    env = {
        "PATH": path,
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        **{k: v for k, v in runtime_env.items() if k != "PATH"},
    }
    return Image(root, root / "dist", root / "opt" / "runbook-exporter", env)


@pytest.mark.slow
def test_build_stage_makes_a_wheel_with_the_release_metadata(image: Image):
    wheels = list(image.dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"runbook_exporter-{__version__}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        info = f"runbook_exporter-{__version__}.dist-info"
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        license_text = z.read(f"{info}/licenses/LICENSE")
    assert f"Version: {__version__}\n" in metadata
    assert "License-Expression: Apache-2.0\n" in metadata
    assert license_text == (ROOT / "LICENSE").read_bytes()
    assert f"{SCRIPT} = exporter.cli:main" in entry_points
    assert all(n.startswith(("exporter/", info)) for n in names), names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # every module of the package, the demo subpackage included (`runbook-exporter demo` after
    # `pip install`); the generators (tools/) and the tests stay in the repository
    repo_modules = {str(p.relative_to(ROOT)) for p in (ROOT / "exporter").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == repo_modules
    assert {"exporter/serving.py", "exporter/demo/run.py"} <= repo_modules
    # and the files shipped beside the code: runbook docs and the Alertmanager example
    from exporter import shipped

    packaged = {f"exporter/_shipped/{n}" for n in shipped.names()}
    assert packaged <= set(names), packaged - set(names)


@pytest.mark.slow
def test_image_runs_the_demo_modules_compose_starts(image: Image):
    """deploy/compose.yaml runs the sample app and the webhook sink from the image; installed
    without the repository, the demo's Prometheus and Alertmanager still get the shipped rules
    (rendered from the package) and the shipped Alertmanager example."""
    python = str(image.venv / "bin" / "python")
    for module in ("exporter.demo.sampleapp", "exporter.demo.devstack"):
        r = subprocess.run(
            [python, "-m", module, "--help"],
            capture_output=True,
            text=True,
            env=image.env,
            cwd=image.root,
            timeout=30,
        )
        assert r.returncode == 0 and r.stdout.startswith("usage:"), f"{module}: {r.stderr}"
        assert not r.stderr, r.stderr  # no runpy warning about a module imported twice
    code = (
        "import sys, pathlib; from exporter.demo import devstack as d; "
        "rules = d.shipped_rules(pathlib.Path(sys.argv[1])); "
        "print(len(rules), d.shipped_alertmanager_config())"
    )
    r = subprocess.run(
        [python, "-c", code, str(image.root / "shipped-rules")],
        capture_output=True,
        text=True,
        env=image.env,
        cwd=image.root,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    count, am = r.stdout.split()
    assert int(count) == len(list((ROOT / "alerts").glob("*.rules.yml")))
    assert am.startswith(str(image.venv)) and Path(am).is_file(), am  # the installed copy


@pytest.mark.slow
def test_image_virtualenv_runs_version_and_check_config(image: Image, tmp_path: Path):
    r = image.run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"runbook-exporter {__version__}"
    where = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c", "import exporter; print(exporter.__file__)"],
        capture_output=True,
        text=True,
        env=image.env,
        cwd=image.root,
        timeout=30,
    )
    assert where.stdout.startswith(str(image.venv)), "imported from the repo, not the wheel"

    good = tmp_path / "config.yml"
    good.write_text(
        "targets:\n"
        "  - name: app\n"
        "    dsn: postgresql://runbook_monitor@db.example.com:5432/app\n"
        "    password_env: APP_DB_PASSWORD\n"
        "    queues:\n"
        "      - table: public.processing_jobs\n"
    )
    r = image.run("--check-config", "--config.file", str(good))
    assert r.returncode == 0, r.stderr
    assert f"{good}: configuration is valid" in r.stdout
    assert "queue processing_jobs: table public.processing_jobs" in r.stdout

    bad = tmp_path / "bad.yml"
    bad.write_text("targets:\n  - name: app\n    dns: postgresql://x@y/z\n")
    r = image.run("--check-config", "--config.file", str(bad))
    assert r.returncode == 2
    assert f"{bad}:3" in r.stderr and "unknown key" in r.stderr

    # the runbook docs and the Alertmanager example come with the image (the wheel ships them)
    r = image.run("runbooks", "--output", str(tmp_path / "runbooks"))
    assert r.returncode == 0, r.stderr
    docs = ROOT / "docs" / "runbooks"
    written = {p.name: p.read_bytes() for p in (tmp_path / "runbooks").iterdir()}
    assert written == {p.name: p.read_bytes() for p in docs.glob("*.md")}
    r = image.run("alertmanager-example")
    assert r.returncode == 0 and r.stdout == (ROOT / "alerts" / "alertmanager.yml").read_text()

    # the example configurations shipped with the deployments are valid, too
    for name, text in shipped_configs().items():
        path = tmp_path / name.replace("/", "_")
        path.write_text(text)
        r = image.run("--check-config", "--config.file", str(path))
        assert r.returncode == 0, f"{name}: {r.stderr}"


def snapshot(tree: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(tree)): (p.stat().st_size, p.stat().st_mtime)
        for p in tree.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
def test_image_serves_its_healthcheck_and_writes_nothing(image: Image, tmp_path: Path):
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "targets:\n"
        "  - name: app\n"
        f"    dsn: postgresql://runbook_monitor@127.0.0.1:{free_port()}/app\n"
        "    collect_interval: 1s\n"
    )
    before = snapshot(image.venv)
    proc = subprocess.Popen(
        [
            str(image.venv / "bin" / SCRIPT),
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        env=image.env,
        cwd=image.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    command = DF.one("HEALTHCHECK", -1).partition(" CMD ")[2]
    healthcheck = [
        arg.replace(f"127.0.0.1:{DEFAULT_PORT}", f"127.0.0.1:{port}") for arg in exec_form(command)
    ]
    try:
        deadline = time.monotonic() + 20
        while True:
            r = subprocess.run(
                healthcheck, env=image.env, capture_output=True, text=True, timeout=10
            )
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert r.returncode == 0, r.stderr
        metrics = Scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        assert metrics.labelsets("runbook_exporter_build_info")[0]["version"] == __version__
        assert metrics.value("runbook_target_up", target="app") == 0
        assert httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=10).status_code in (200, 503)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert snapshot(image.venv) == before, "the exporter wrote into its installation"
    r = subprocess.run(healthcheck, env=image.env, capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, "the healthcheck must fail when nothing answers"


@pytest.mark.slow
def test_image_virtualenv_is_small_and_has_no_installer(image: Image):
    size = sum(
        p.stat().st_size for p in image.venv.rglob("*") if p.is_file() and not p.is_symlink()
    )
    print(f"\nvirtualenv the image adds to the base: {size / 1e6:.1f} MB")
    assert size < 60e6, f"{size / 1e6:.1f} MB: what grew?"
    assert not (image.venv / "bin" / "pip").exists()
    # bytecode compiled at install time: imports stay fast on a read-only root filesystem
    assert list(image.venv.glob("lib/python3*/site-packages/exporter/__pycache__/cli.*.pyc"))


# --- Kubernetes ----------------------------------------------------------------------------

CORE_KINDS = {"Deployment", "Service", "ConfigMap", "Secret"}
MIN_K8S = "1.29.0"


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {name: load_docs(K8S / name) for name in kustomization()["resources"]}


def objects() -> dict[str, dict[str, Any]]:
    out = {}
    for name, docs in {
        **manifests(),
        "secret.example.yaml": load_docs(K8S / "secret.example.yaml"),
    }.items():
        for d in docs:
            key = f"{d['kind']}/{d['metadata']['name']}"
            assert key not in out, f"{key} defined twice ({name})"
            out[key] = d
    return out


def the(kind: str) -> dict[str, Any]:
    found = [o for k, o in objects().items() if k.startswith(f"{kind}/")]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def shipped_configs() -> dict[str, str]:
    return {
        "deploy/kubernetes/configmap.yaml": the("ConfigMap")["data"]["config.yml"],
        "deploy/systemd/config.yml": (SYSTEMD / "config.yml").read_text(),
    }


def test_kustomization_lists_every_manifest():
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    listed = set(k["resources"])
    on_disk = {
        p.name
        for p in K8S.glob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    }
    assert listed == on_disk, "every manifest (except *.example.yaml) is applied by -k"
    kinds = {d["kind"] for docs in manifests().values() for d in docs}
    assert {"Deployment", "Service", "ServiceMonitor", "ConfigMap"} <= kinds


def test_core_objects_validate_against_the_kubernetes_schemas():
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    versions = sorted({MIN_K8S, latest_version()})
    validated = set()
    for key, obj in objects().items():
        if obj["kind"] not in CORE_KINDS:
            assert obj["apiVersion"].startswith("monitoring.coreos.com/"), f"{key}: unchecked"
            continue
        for v in versions:
            kubernetes_validate.validate(obj, v, strict=True)  # raises on any error
        validated.add(obj["kind"])
    assert validated == CORE_KINDS
    # the validator is not vacuous: a typo in a container field is rejected
    broken = json.loads(json.dumps(the("Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, MIN_K8S, strict=True)


def test_deployment_agrees_with_the_image_the_service_and_the_config():
    dep, svc, cm, secret = the("Deployment"), the("Service"), the("ConfigMap"), the("Secret")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()

    assert container["image"] == f"runbook-exporter:{__version__}"
    (port,) = container["ports"]
    assert port["containerPort"] == DEFAULT_PORT
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] == port["name"] and svc_port["port"] == DEFAULT_PORT
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        assert container[probe]["httpGet"] == {"path": path, "port": port["name"]}
    res = container["resources"]
    assert {"cpu", "memory"} <= res["requests"].keys() and "memory" in res["limits"]

    uid, gid = (int(x) for x in DF.one("USER", -1).split(":"))
    for sc in (pod["securityContext"], container["securityContext"]):
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == uid and sc["runAsGroup"] == gid
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False

    # the config is mounted where the image's CMD reads it, from the ConfigMap's key
    assert f"--config.file={CONFIG_PATH}" in container["args"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = next(
        m for m in mounts.values() if m["mountPath"] == str(Path(CONFIG_PATH).parent)
    )
    assert config_mount["readOnly"] is True
    config_volume = volumes[config_mount["name"]]["configMap"]
    assert config_volume["name"] == cm["metadata"]["name"]
    assert Path(CONFIG_PATH).name in cm["data"]

    # the password file the config names is the Secret's key, mounted read-only
    cfg = parse_config(cm["data"]["config.yml"], "configmap.yaml")
    (target,) = cfg.targets
    assert target.password_file is not None and target.dsn and "@" in target.dsn
    assert ":" not in target.dsn.split("://", 1)[1].split("@", 1)[0], "no password in the DSN"
    secret_mounts = [
        m for m in mounts.values() if str(target.password_file).startswith(m["mountPath"] + "/")
    ]
    assert len(secret_mounts) == 1 and secret_mounts[0]["readOnly"] is True
    secret_volume = volumes[secret_mounts[0]["name"]]["secret"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    rel = str(target.password_file.relative_to(secret_mounts[0]["mountPath"]))
    (item,) = [i for i in secret_volume["items"] if i["path"] == rel]
    assert item["key"] in secret["stringData"]
    assert "secret.example.yaml" not in kustomization()["resources"]


def test_servicemonitor_scrapes_the_service_port():
    sm, svc = the("ServiceMonitor"), the("Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["endpoints"], "at least one endpoint"
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names
        assert ep.get("path", "/metrics") == "/metrics"
        assert re.fullmatch(r"\d+s", ep["interval"]) and re.fullmatch(r"\d+s", ep["scrapeTimeout"])
        assert int(ep["scrapeTimeout"][:-1]) <= int(ep["interval"][:-1])
    assert set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}


def test_prometheusrule_if_shipped_is_structurally_sound():
    rules = [o for o in objects().values() if o["kind"] == "PrometheusRule"]
    if not (K8S / "prometheusrule.yaml").exists():
        assert rules == []  # nothing else may declare one either
        return
    assert rules, "prometheusrule.yaml exists: list it in kustomization.yaml"
    for rule in rules:
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        groups = rule["spec"]["groups"]
        assert groups
        for g in groups:
            assert g["name"] and g["rules"]
            for r in g["rules"]:
                assert r.get("expr") and (("alert" in r) != ("record" in r)), r


# --- systemd -------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert current and sep, f"bad unit line: {raw}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def unit_values(section: str, key: str) -> list[str]:
    return [v for k, v in parse_unit(UNIT.read_text())[section] if k == key]


def test_systemd_unit_is_hardened():
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "MemoryDenyWriteExecute": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "EnvironmentFile": "-/etc/default/runbook-exporter",
        "RestartPreventExitStatus": "2",  # configuration errors
    }
    for key, value in expected.items():
        assert unit_values("Service", key) == [value], key
    assert set(unit_values("Service", "RestrictAddressFamilies")[0].split()) == {
        "AF_INET",
        "AF_INET6",
        "AF_UNIX",
    }
    assert unit_values("Service", "SystemCallFilter")[0] == "@system-service"
    assert "multi-user.target" in unit_values("Install", "WantedBy")
    (exec_start,) = unit_values("Service", "ExecStart")
    argv = exec_start.split()
    assert Path(argv[0]).name == SCRIPT and SCRIPT in PYPROJECT["project"]["scripts"]
    assert Path(argv[0]).parent == Path("/opt/runbook-exporter/bin")
    assert f"--config.file={CONFIG_PATH}" in argv
    # the install steps documented beside it create exactly that path
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "python3 -m venv /opt/runbook-exporter" in docs
    assert "python3 -m venv /opt/runbook-exporter" in UNIT.read_text()


def test_systemd_environment_file_defines_what_the_example_config_reads():
    env: dict[str, str] = {}
    for raw in (SYSTEMD / "runbook-exporter.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not KEY=VALUE: {raw}"
            env[key] = value
    cfg = parse_config((SYSTEMD / "config.yml").read_text(), "deploy/systemd/config.yml")
    wanted = {n for t in cfg.targets for n in (t.password_env, t.dsn_env) if n}
    assert wanted and wanted <= env.keys()
    for t in cfg.targets:
        assert t.password_file is None or str(t.password_file).startswith("/run/credentials/")
    (exec_start,) = unit_values("Service", "ExecStart")
    referenced = set(re.findall(r"\$\{?(\w+)", exec_start))
    assert referenced <= env.keys()


@pytest.mark.slow
def test_systemd_analyze_verify(image: Image, tmp_path: Path):
    text = UNIT.read_text()
    (exec_start,) = unit_values("Service", "ExecStart")
    shipped = exec_start.split()[0]
    installed = str(image.venv / "bin" / SCRIPT)
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(f"ExecStart={shipped} ", f"ExecStart={installed} "))
    assert unit.read_text().count(installed) == 1
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", "--generators=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr
    # and the check is real: the shipped path does not exist here, so it is reported
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", "--generators=no", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if not Path(shipped).exists():
        assert r.returncode != 0 and "is not executable" in r.stderr


def test_systemd_security_exposure_is_low():
    r = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-2000:]
    assert float(m[1]) <= 2.0, r.stdout


# --- release metadata ----------------------------------------------------------------------


def test_version_comes_from_one_place():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "exporter.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_version_flag(capsys: pytest.CaptureFixture[str]):
    from exporter.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"runbook-exporter {__version__}"


def test_changelog_follows_keep_a_changelog_and_covers_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/en/1.1.0/" in text
    assert "https://semver.org/spec/v2.0.0.html" in text
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\S+))?$", text, re.M)
    assert headings and headings[0][0] == __version__, headings
    allowed = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    sections = re.findall(r"^### (.+)$", text, re.M)
    assert sections and set(sections) <= allowed
    first = text.split(f"## [{__version__}]", 1)[1].split("\n## [", 1)[0]
    for feature in ("queue", "pg_monitor", "Dockerfile", "systemd", "Kubernetes"):
        assert feature in first, f"the {__version__} entry should mention {feature}"


def test_license_is_the_apache_2_text():
    data = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(data).hexdigest() == APACHE_2_SHA256
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
