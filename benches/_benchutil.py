"""Helpers shared by the benchmark scripts: package versions and the peak-RSS reset."""

from __future__ import annotations

import platform


def versions(packages: list[str]) -> str:
    """``Python X, pkg version, ...`` for the installed ones among ``packages``."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for p in packages:
        try:
            parts.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` (Linux ``clear_refs``); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
