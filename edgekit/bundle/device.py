"""``edgekit device-bench BUNDLE --device local | ssh://user@host[:port] | adb://serial``: copy a bundle to a device,
run its ``run.py --check`` and ``--bench`` there, and bring the JSON back (optionally into a run's report).

One transport per scheme behind a small Protocol; each uses the platform's own tools (cp, ssh/scp, adb)."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from edgekit.errors import EdgekitError, one_line

REMOTE_DIR = "edgekit-bundles"


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


class Transport(Protocol):
    label: str

    def push(self, bundle: Path) -> str:
        """Copy the bundle folder to the device; returns its path there."""

    def run(self, command: list[str], timeout: float) -> Completed:
        """Run a command on the device."""


def _run(argv: list[str], timeout: float) -> Completed:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise EdgekitError(f"{argv[0]} is not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise EdgekitError(f"{shlex.join(argv[:3])} ... did not finish within {timeout:g} s") from None
    return Completed(done.returncode, done.stdout, done.stderr)


class LocalTransport:
    """This machine, in a temporary folder: the same runner code path as a device, without a network."""

    label = "local"

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="edgekit-device-"))

    def push(self, bundle: Path) -> str:
        target = self._root / bundle.name
        shutil.copytree(bundle, target)
        return str(target)

    def run(self, command: list[str], timeout: float) -> Completed:
        return _run(command, timeout)

    def close(self) -> None:
        """The copy is this machine's own scratch: removed after the run, whatever happened."""
        shutil.rmtree(self._root, ignore_errors=True)


class SshTransport:
    def __init__(self, user: str | None, host: str, port: int, identity: str | None, known_hosts: str | None) -> None:
        self.label = f"ssh://{user + '@' if user else ''}{host}:{port}"
        self._dest = f"{user}@{host}" if user else host
        options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if known_hosts:
            options += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new"]
        if identity:
            options += ["-i", identity]
        self._ssh = ["ssh", "-p", str(port), *options]
        self._scp = ["scp", "-P", str(port), "-q", "-r", *options]

    def _check(self, done: Completed, what: str) -> Completed:
        if done.code == 255:  # ssh's own failure, not the remote command's
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no reason given"
            raise EdgekitError(f"{self.label} is not reachable ({what}): {reason}")
        return done

    def push(self, bundle: Path) -> str:
        remote = f"{REMOTE_DIR}/{bundle.name}"
        self._check(_run([*self._ssh, self._dest, f"rm -rf {shlex.quote(remote)} && mkdir -p {REMOTE_DIR}"], 60),
                    "mkdir")
        done = self._check(_run([*self._scp, str(bundle), f"{self._dest}:{REMOTE_DIR}/"], 600), "scp")
        if done.code != 0:
            raise EdgekitError(f"copying the bundle to {self.label} failed: {done.stderr.strip()[-300:]}")
        return remote

    def run(self, command: list[str], timeout: float) -> Completed:
        return self._check(_run([*self._ssh, self._dest, shlex.join(command)], timeout), "run")


class AdbTransport:
    def __init__(self, serial: str) -> None:
        self.label = f"adb://{serial}"
        self._adb = ["adb", "-s", serial]

    def push(self, bundle: Path) -> str:
        remote = f"/data/local/tmp/{REMOTE_DIR}/{bundle.name}"
        done = _run([*self._adb, "push", str(bundle), remote], 600)
        if done.code != 0:
            raise EdgekitError(f"adb push to {self.label} failed: {done.stderr.strip()[-300:]}")
        return remote

    def run(self, command: list[str], timeout: float) -> Completed:
        return _run([*self._adb, "shell", shlex.join(command)], timeout)


def transport_for(device: str, identity: str | None = None, known_hosts: str | None = None) -> Transport:
    if device == "local":
        return LocalTransport()
    url = urlparse(device)
    if url.scheme == "ssh" and url.hostname:
        return SshTransport(url.username, url.hostname, url.port or 22, identity, known_hosts)
    if url.scheme == "adb" and url.netloc:
        return AdbTransport(url.netloc)
    raise EdgekitError(f"--device {device!r}: use local, ssh://user@host[:port] or adb://SERIAL")


@dataclass(frozen=True)
class DeviceResult:
    device: str
    target: str
    check: dict
    bench: dict
    error: str = ""  # a device of a farm that could not be benched: why (check and bench are then empty)


def _json(done: Completed, what: str, device: str) -> dict:
    if done.code not in (0, 1) or not done.stdout.strip():  # 1 with JSON: a gate failed, still a report
        lines = done.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit code {done.code}"
        if "No module named" in reason or "is not installed" in reason:
            raise EdgekitError(f"{device} lacks the bundle's runtime: {reason}")
        raise EdgekitError(f"run.py {what} failed on {device}: {reason}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise EdgekitError(f"run.py {what} on {device} printed no JSON: {done.stdout.strip()[-200:]}") from None


def bundle_target(bundle: Path) -> str:
    """The target a bundle was made for, from its manifest (a folder that is not a bundle: one line)."""
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise EdgekitError(f"{bundle} is not a bundle (no manifest.json); make one with `edgekit bundle`")
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))["target"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise EdgekitError(f"{manifest_path}: not a bundle manifest ({one_line(exc)})") from None


def device_bench(bundle: str | Path, device: str, *, python: str = "python3", seconds: float = 1.0,
                 identity: str | None = None, known_hosts: str | None = None, timeout: float = 900) -> DeviceResult:
    bundle = Path(bundle)
    target = bundle_target(bundle)
    transport = transport_for(device, identity, known_hosts)
    try:
        remote = transport.push(bundle)
        run_py = f"{remote}/run.py"
        check = _json(transport.run([python, run_py, "--check"], timeout), "--check", transport.label)
        bench = _json(transport.run([python, run_py, "--bench", "--seconds", str(seconds)], timeout), "--bench",
                      transport.label)
    finally:
        getattr(transport, "close", lambda: None)()
    return DeviceResult(transport.label, target, check, bench)


def record(run_dir: str | Path, result: DeviceResult) -> None:
    """Keep the device's rows in the run folder (devices.json, replacing an earlier result of the same device and
    target) and show them in its reports beside the host's."""
    from edgekit.fsutil import jsonable, write_json
    from edgekit.report.render import DEVICES_FILE, add_devices, read_devices

    folder = Path(run_dir)
    if not (folder / "run.json").is_file():
        raise EdgekitError(f"--run {folder}: not a run folder (no run.json)")
    devices = [d for d in read_devices(folder) if (d["device"], d["target"]) != (result.device, result.target)]
    write_json(folder / DEVICES_FILE, [*devices, jsonable(result)])
    add_devices(folder)
