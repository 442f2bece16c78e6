"""DockerSandbox: run each candidate in a throwaway container through the Docker API.

Works against Docker and against podman's Docker-compatible service (`podman system service`).
One container per `run()`:

- image: `image`, or `images_per_task[task]` for a sandbox made by `for_task(task)`;
- no network, read-only root filesystem, a size-limited tmpfs at /tmp (scratch, cwd, HOME),
  memory limit = swap limit = `memory_mb`, pids limit, CPU quota, ulimits (open files, file
  size, CPU seconds, no core dumps), all capabilities dropped, no-new-privileges, uid 65534,
  an environment built from scratch (nothing of the worker's environment enters);
- the harness (`sandbox/harness.py`) and the request travel in as a tar (`put_archive`) into an
  anonymous volume at /sbx (root-owned: the candidate can read but not change them); the
  response comes back from /sbx/out (owned by uid 65534) with `get_archive` after exit, so
  nothing depends on the worker and the engine sharing a filesystem;
- stdout/stderr go to the engine's log with a size cap and come back as tails;
- the container and its volume are removed after every run, whatever happened.

Infrastructure faults (engine unreachable, image missing, GPU not provided) raise
`SandboxUnavailable`; everything the candidate does comes back as a `RunResult`.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from evoforge.sandbox._common import CLEAN_ENV, Limits, build_result, cpu_limit_s, encode_request
from evoforge.sandbox.base import RunResult, SandboxUnavailable

DEFAULT_IMAGE = "evoforge-eval-base:latest"
HARNESS_PATH = Path(__file__).with_name("harness.py")
SANDBOX_UID = 65534
LABEL = "evoforge.sandbox"
PODMAN_SOCK = "/run/evoforge/podman.sock"  # where scripts/setup_podman.sh puts the API socket

_SBX = "/sbx"
_OUT = "/sbx/out"
# PID 1 is a tiny shell: it runs the harness, then records the cgroup's OOM-kill counter
# (cgroup v2 memory.events, v1 memory.oom_control) so a kernel OOM kill can be told apart
# from other signals even where the engine does not report State.OOMKilled (podman on v1).
_COMMAND = (
    "python3 /sbx/harness.py /sbx/request.json /sbx/out/response.json; rc=$?; "
    "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control "
    "> /sbx/out/cgroup.txt 2>/dev/null; exit $rc"
)
_BUILD_HINT = (
    "build it with `sudo scripts/setup_podman.sh` (podman, base image {base}) or "
    "`docker build -f docker/evaluator.Dockerfile -t {image} .` (Docker)"
)


class DockerSandbox:
    """`Sandbox` implementation that runs candidates in containers via the Docker API."""

    def __init__(
        self,
        image: str | None = None,
        base_url: str | None = None,
        gpu: bool = False,
        images_per_task: Mapping[str, str] | None = None,
        *,
        cpus: float = 1.0,
        pids_limit: int = 128,
        tmp_mb: int = 64,
        open_files: int = 256,
        max_file_mb: int = 256,
        log_tail_bytes: int = 8192,
        max_response_mb: int = 256,
        startup_grace_s: float = 2.0,
        harness_path: str | Path | None = None,
        client: Any = None,
    ) -> None:
        self.image = image or os.environ.get("EVOFORGE_SANDBOX_IMAGE") or DEFAULT_IMAGE
        self.base_url = base_url
        self.gpu = gpu
        if images_per_task is None:
            images_per_task = parse_images(os.environ.get("EVOFORGE_SANDBOX_IMAGES", ""))
        self.images_per_task = dict(images_per_task)
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.tmp_mb = tmp_mb
        self.open_files = open_files
        self.max_file_mb = max_file_mb
        self.log_tail_bytes = log_tail_bytes
        self.max_response_bytes = max_response_mb << 20
        self.startup_grace_s = startup_grace_s
        self.harness_path = Path(harness_path) if harness_path else HARNESS_PATH
        self._client = client
        self._owns_client = client is None
        self._checked_images: set[str] = set()
        self._lock = threading.Lock()

    # ---- configuration -------------------------------------------------------------------

    def image_for(self, task: str | None) -> str:
        return self.images_per_task.get(task, self.image) if task else self.image

    def for_task(self, task: str, *, gpu: bool | None = None) -> "DockerSandbox":
        """A sandbox bound to `task`'s image (and GPU need), sharing this one's engine client."""
        clone = DockerSandbox.__new__(DockerSandbox)
        clone.__dict__.update(self.__dict__)
        clone.image = self.image_for(task)
        clone.gpu = self.gpu if gpu is None else gpu
        clone._client = self.client()
        clone._owns_client = False
        clone._checked_images = self._checked_images
        clone._lock = threading.Lock()
        return clone

    # ---- engine --------------------------------------------------------------------------

    def client(self) -> Any:
        with self._lock:
            return self._connect()

    def _connect(self) -> Any:
        if self._client is None:
            import docker

            base_url = self.base_url or default_base_url()
            where = base_url or os.environ.get("DOCKER_HOST") or "the default Docker socket"
            try:
                if base_url:
                    self._client = docker.DockerClient(base_url=base_url, timeout=120)
                else:
                    self._client = docker.from_env(timeout=120)
                self._client.ping()
            except Exception as exc:  # docker.errors.DockerException, requests errors
                self._client = None
                raise SandboxUnavailable(
                    f"cannot reach a container engine at {where}: {exc}. Start Docker, or run "
                    "`sudo scripts/setup_podman.sh` and export the DOCKER_HOST it prints."
                ) from exc
        return self._client

    def _check_image(self, image: str) -> None:
        if image in self._checked_images:
            return
        import docker

        try:
            self.client().images.get(image)
        except docker.errors.ImageNotFound as exc:
            hint = _BUILD_HINT.format(base=DEFAULT_IMAGE, image=image)
            raise SandboxUnavailable(f"image {image!r} is not on the engine; {hint}") from exc
        except docker.errors.APIError as exc:
            raise SandboxUnavailable(f"cannot inspect image {image!r}: {exc}") from exc
        self._checked_images.add(image)

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
        self._client = None

    # ---- the Sandbox protocol ------------------------------------------------------------

    def run(
        self,
        code: str,
        entrypoint: str,
        inputs: list[dict[str, Any]],
        *,
        seed: int = 0,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        driver: str | None = None,
    ) -> RunResult:
        import docker

        payload = _tar_payload(self.harness_path.read_bytes(),
                               encode_request(code, entrypoint, inputs, seed, driver))
        self._check_image(self.image)
        container = None
        try:
            container = self._create(timeout_s, memory_mb)
            if not container.put_archive(_SBX, payload):
                raise SandboxUnavailable("the engine refused the request archive")
            started = time.monotonic()
            container.start()
            exit_code, timed_out = self._wait(container, timeout_s + self.startup_grace_s)
            duration_s = time.monotonic() - started
            stdout, stderr = self._log_tails(container)
            files = {} if timed_out else self._read_out(container)
            state = _inspect_state(container)
            return _result(exit_code, timed_out, files, state, stdout, stderr, duration_s,
                           self._limits(timeout_s, memory_mb))
        except docker.errors.APIError as exc:
            raise SandboxUnavailable(f"container engine error: {exc}") from exc
        finally:
            if container is not None:
                _remove(container)

    # ---- steps ---------------------------------------------------------------------------

    def _create(self, timeout_s: float, memory_mb: int) -> Any:
        from docker.types import DeviceRequest, LogConfig, Ulimit

        cpu_s = self._cpu_s(timeout_s)
        threads = str(max(1, int(self.cpus)))
        env = dict(
            CLEAN_ENV,  # the same environment as the process runners
            PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1",
            OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
            NUMEXPR_NUM_THREADS=threads, VECLIB_MAXIMUM_THREADS=threads,
            EVOFORGE_DEVICE="cuda" if self.gpu else "cpu",
            # the harness turns these into rlimits before the candidate runs (a MemoryError is
            # a clean "memory" result); the cgroup limits below stay the hard ceiling
            # (no address-space limit with a GPU: CUDA reserves huge virtual ranges)
            EVOFORGE_LIMITS=json.dumps({"memory_mb": 0 if self.gpu else int(memory_mb),
                                        "nofile": self.open_files,
                                        "fsize_mb": self.max_file_mb}),
        )
        memory = f"{int(memory_mb)}m"
        kwargs: dict[str, Any] = dict(
            command=["sh", "-c", _COMMAND],
            entrypoint=[],
            user=f"{SANDBOX_UID}:{SANDBOX_UID}",
            working_dir="/tmp",
            environment=env,
            hostname="sandbox",
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"size={int(self.tmp_mb)}m,mode=1777,nosuid,nodev"},
            mounts=[_volume_mount(_SBX)],
            mem_limit=memory,
            memswap_limit=memory,
            pids_limit=self.pids_limit,
            nano_cpus=int(self.cpus * 1e9),
            shm_size=f"{int(self.tmp_mb)}m",
            ipc_mode="private",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            ulimits=[
                Ulimit(name="nofile", soft=self.open_files, hard=self.open_files),
                # nproc counts per host uid across all sandboxes: pids_limit is the real cap
                Ulimit(name="nproc", soft=4096, hard=4096),
                Ulimit(name="fsize", soft=self.max_file_mb << 20, hard=self.max_file_mb << 20),
                Ulimit(name="cpu", soft=cpu_s, hard=cpu_s + 1),
                Ulimit(name="core", soft=0, hard=0),
            ],
            log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            labels={LABEL: "1"},
        )
        if self.gpu:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = self.client().containers.create(self.image, **kwargs)
        if self.gpu and not (container.attrs.get("HostConfig") or {}).get("DeviceRequests"):
            container.reload()
            if not (container.attrs.get("HostConfig") or {}).get("DeviceRequests"):
                _remove(container)
                raise SandboxUnavailable(
                    "the task needs a GPU but the container engine ignored the GPU device "
                    "request (podman's Docker API drops DeviceRequests); use Docker with the "
                    "NVIDIA Container Toolkit, or run the task on a GPU worker without containers"
                )
        return container

    def _wait(self, container: Any, limit_s: float) -> tuple[int | None, bool]:
        import requests

        try:
            status = container.wait(timeout=limit_s)
            return int(status.get("StatusCode", -1)), False
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            pass
        try:
            container.kill()
        except Exception:  # it may have exited in the meantime; removal follows anyway
            pass
        try:
            container.wait(timeout=10)
        except Exception:
            pass
        return None, True

    def _log_tails(self, container: Any) -> tuple[str, str]:
        cap = self.log_tail_bytes
        try:
            out = container.logs(stdout=True, stderr=False)
            err = container.logs(stdout=False, stderr=True)
        except Exception:
            return "", ""
        return _tail(out, cap), _tail(err, cap)

    def _read_out(self, container: Any) -> dict[str, bytes]:
        try:
            chunks, _stat = container.get_archive(_OUT)
            buf, size = io.BytesIO(), 0
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_response_bytes + (1 << 20):
                    return {"__too_large__": b""}
                buf.write(chunk)
        except Exception:
            return {}
        buf.seek(0)
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=buf, mode="r") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.size <= self.max_response_bytes:
                    name = member.name.rsplit("/", 1)[-1]
                    if name in ("response.json", "cgroup.txt"):
                        files[name] = tar.extractfile(member).read()
        return files

    def _limits(self, timeout_s: float, memory_mb: int) -> Limits:
        """The limits this runner sets, as `build_result` reports them."""
        return Limits(timeout_s=float(timeout_s), memory_mb=int(memory_mb),
                      cpu_s=self._cpu_s(timeout_s), nofile=self.open_files,
                      nproc=self.pids_limit, fsize_mb=self.max_file_mb,
                      scratch_mb=int(self.tmp_mb))

    def _cpu_s(self, timeout_s: float) -> int:
        return cpu_limit_s(timeout_s + self.startup_grace_s, self.cpus)


# ---- helpers -------------------------------------------------------------------------------


def default_base_url() -> str | None:
    """The engine to use when none is given: DOCKER_HOST (None here: the SDK reads it, TLS
    settings included), else Docker's socket, else the podman socket of scripts/setup_podman.sh."""
    if os.environ.get("DOCKER_HOST"):
        return None
    for sock in ("/var/run/docker.sock", PODMAN_SOCK):
        if os.path.exists(sock):
            return f"unix://{sock}"
    return None


def parse_images(spec: str) -> dict[str, str]:
    """`"matmul=evoforge-eval:1, optimizer=evoforge-eval-gpu:1"` -> {task: image}."""
    images = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        task, sep, image = item.partition("=")
        if not sep or not task.strip() or not image.strip():
            raise ValueError(f"EVOFORGE_SANDBOX_IMAGES: expected task=image, got {item!r}")
        images[task.strip()] = image.strip()
    return images


def _volume_mount(target: str) -> Any:
    from docker.types import Mount

    return Mount(target=target, source=None, type="volume")


def _tar_payload(harness: bytes, request: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        out = tarfile.TarInfo("out")
        out.type, out.mode, out.uid, out.gid = tarfile.DIRTYPE, 0o700, SANDBOX_UID, SANDBOX_UID
        tar.addfile(out)
        for name, data in (("harness.py", harness), ("request.json", request)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o444
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tail(data: bytes, cap: int) -> str:
    text = data[-cap:].decode("utf-8", errors="replace")
    return ("[...]" + text) if len(data) > cap else text


def _inspect_state(container: Any) -> dict[str, Any]:
    try:
        container.reload()
        return container.attrs.get("State") or {}
    except Exception:
        return {}


def _remove(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except Exception:
        pass  # already gone; leftovers carry the label evoforge.sandbox=1 for pruning


def _oom_kills(cgroup_txt: bytes | None) -> int | None:
    if cgroup_txt is None:
        return None
    found = re.findall(rb"^oom_kill (\d+)$", cgroup_txt, flags=re.M)
    return sum(int(n) for n in found) if found else None


def _result(exit_code: int | None, timed_out: bool, files: dict[str, bytes],
            state: dict[str, Any], stdout: str, stderr: str, duration_s: float,
            limits: Limits) -> RunResult:
    """What the engine reported, in the terms of the shared `build_result`: the shell wrapper's
    exit code 128 + N means the harness died of signal N, and the cgroup's OOM-kill counter (or
    the engine's OOMKilled) tells a memory kill apart from other deaths."""
    raw = files.get("response.json") or b""
    code = exit_code if exit_code is not None else int(state.get("ExitCode", -1))
    exit_kind, exit_value = ("signal", code - 128) if code > 128 else ("code", code)
    oom = _oom_kills(files.get("cgroup.txt"))
    oom_reason = ""
    if state.get("OOMKilled") or (oom or 0) > 0:
        oom_reason = "killed by the out-of-memory killer"
    elif exit_kind == "signal" and exit_value == signal.SIGKILL and oom is None:
        # the wrapper itself died, so the counter is unknown: SIGKILL at a memory limit
        oom_reason = "killed by SIGKILL, most likely at this limit"
    return build_result(timed_out=timed_out, exit_kind=exit_kind, exit_value=exit_value,
                        cpu_s=0.0, limits=limits, stdout=stdout, stderr=stderr,
                        duration_s=duration_s, raw=b"" if timed_out else raw,
                        raw_oversize="__too_large__" in files, oom_reason=oom_reason)
