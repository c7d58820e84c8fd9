"""``edgekit device-bench BUNDLE --devices FARM.toml``: the same bundle checked and benched on many devices at
once, a thread per device (each waits on its own ssh / adb), one row per device. A device that is unreachable or
lacks the runtime is a row with its reason; the others go on.

```toml
[[device]]
uri = "ssh://pi@10.0.0.5"      # local | ssh://user@host[:port] | adb://SERIAL
name = "kitchen-pi"            # optional label (default: the uri)
python = "python3"             # optional, as --python
identity = "~/.ssh/id_pi"      # optional, as --identity
known_hosts = "farm_hosts"     # optional, as --known-hosts
```"""
from __future__ import annotations

import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgekit.bundle.device import DeviceResult, device_bench, transport_for
from edgekit.errors import EdgekitError, one_line

_KEYS = {"uri", "name", "python", "identity", "known_hosts"}


@dataclass(frozen=True)
class Device:
    uri: str
    name: str
    python: str = "python3"
    identity: str | None = None
    known_hosts: str | None = None


def load_devices(path: str | Path) -> list[Device]:
    """Read and check a farm file; every problem is one line naming it (bad input, exit 2)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgekitError(f"devices file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgekitError(f"devices file {path}: {one_line(exc)}") from None
    entries = raw.get("device")
    if set(raw) - {"device"} or not isinstance(entries, list) or not entries:
        raise EdgekitError(f"{path}: expected [[device]] tables with uri = \"ssh://user@host\" (and nothing else)")
    devices = []
    for i, entry in enumerate(entries):
        where = f"{path}: [[device]] #{i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
            raise EdgekitError(f"{where}: uri = \"local | ssh://user@host[:port] | adb://SERIAL\" is required")
        if unknown := sorted(set(entry) - _KEYS):
            raise EdgekitError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
        if not all(isinstance(v, str) for v in entry.values()):
            raise EdgekitError(f"{where}: every value must be a string")
        try:
            transport_for(entry["uri"])  # a malformed uri is refused before anything runs
        except EdgekitError as exc:
            raise EdgekitError(f"{where}: {exc}") from None
        devices.append(Device(entry["uri"], entry.get("name", entry["uri"]), entry.get("python", "python3"),
                              entry.get("identity"), entry.get("known_hosts")))
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise EdgekitError(f"{path}: two devices are named {next(n for n in names if names.count(n) > 1)!r}")
    return devices


def _one(bundle: Path, device: Device, target: str, seconds: float) -> DeviceResult:
    try:
        result = device_bench(bundle, device.uri, python=device.python, seconds=seconds, identity=device.identity,
                              known_hosts=device.known_hosts)
    except EdgekitError as exc:  # this device's problem is its row
        return DeviceResult(device.name, target, {}, {}, str(exc))
    return DeviceResult(device.name, result.target, result.check, result.bench)


def device_farm(bundle: str | Path, devices: list[Device], *, seconds: float = 1.0) -> list[DeviceResult]:
    """Every device in parallel; results in the farm file's order."""
    from edgekit.bundle.device import bundle_target

    bundle = Path(bundle)
    target = bundle_target(bundle)  # a folder that is no bundle is bad input, before any device is tried
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        return list(pool.map(lambda d: _one(bundle, d, target, seconds), devices))
