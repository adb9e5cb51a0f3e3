"""Triton's repository layout: model directories, numeric version folders, version policy."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

_ASCII_DIGITS = frozenset("0123456789")
# Versions are int64 in Triton's core and on the wire; a folder beyond that names none.
_INT64_MAX = 2**63 - 1


def model_names(repository: Path) -> list[str]:
    """Every sub-directory is a model (hidden ones excepted)."""
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def version_of_folder(name: str):
    """The version a folder name stands for, or None when it names none.

    ASCII digits only (``str.isdigit`` also takes "²" and "١"), no leading zero,
    and within int64, so every loaded version can be addressed by a request.
    """
    if not name or not _ASCII_DIGITS.issuperset(name):
        return None
    if len(name) > 1 and name.startswith("0"):
        log.warning("ignore version directory '%s' which contains leading zeros in its "
                    "directory name", name)
        return None
    number = int(name)
    if number > _INT64_MAX:
        log.warning("ignore version directory '%s' which is beyond the largest version "
                    "number %d", name, _INT64_MAX)
        return None
    return number


def available_versions(model_dir: Path) -> list[int]:
    """Numeric version folders; other folders (``warmup``, "²", "007") are not versions."""
    versions = []
    for entry in model_dir.iterdir():
        if entry.is_dir():
            number = version_of_folder(entry.name)
            if number is not None:
                versions.append(number)
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
