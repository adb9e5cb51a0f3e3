"""Triton's repository layout: model directories, numeric version folders, version policy."""
from __future__ import annotations

from pathlib import Path


def model_names(repository: Path) -> list[str]:
    """Every sub-directory is a model (hidden ones excepted)."""
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def available_versions(model_dir: Path) -> list[int]:
    """Numeric version folders; Triton ignores names that are not numbers or start with '0'."""
    versions = []
    for entry in model_dir.iterdir():
        if entry.is_dir() and entry.name.isdigit() and not entry.name.startswith("0"):
            versions.append(int(entry.name))
    return sorted(versions)


def select_versions(policy, versions: list[int]) -> list[int]:
    """Apply a ``ModelVersionPolicy`` to the versions on disk (ascending)."""
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(versions)
    if which == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in versions if v in wanted]
    count = policy.latest.num_versions if which == "latest" else 1
    return versions[-max(count, 1):] if versions else []
