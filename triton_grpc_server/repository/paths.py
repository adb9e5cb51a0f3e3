"""Paths a model config names, confined to the model's own directory.

A config can come from a client (``RepositoryModelLoad`` with a ``config``
override), so every file it names -- ``label_filename``,
``default_model_filename``, ``cc_model_filenames``, ``model_warmup`` input
files, sequence-state ``initial_state`` data files -- must stay inside the model directory the load reads (the repository's
``<model>/`` or the load's private override directory). The check is lexical:
no absolute paths, no NUL, no ``..`` that climbs out once normalized. Links
placed by whoever owns the repository are followed as Triton follows them; an
override directory holds only regular files this server wrote.

The refusal never says whether the outside path exists: it is decided before
anything outside is touched, and its text is the same either way.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidArgument, clip

# Triton reads warmup data files, and sequence-state initial data, from these folders.
WARMUP_FOLDER = "warmup"
INITIAL_STATE_FOLDER = "initial_state"


def confined_path(model_dir: Path, relative: str, field: str, model_name: str,
                  base: str = "") -> Path:
    """``model_dir / base / relative``, refused (INVALID_ARG) unless it stays in ``model_dir``.

    ``base`` is a folder inside the model directory the field is relative to
    (a version folder, ``warmup``).
    """
    joined = os.path.join(base, relative) if base else relative
    normalized = os.path.normpath(joined) if joined else ""
    if (not relative or "\0" in relative or os.path.isabs(relative)
            or normalized in ("", ".", "..") or normalized.startswith(".." + os.sep)
            or os.path.isabs(normalized)):
        raise InvalidArgument(
            f"{field} '{clip(relative)}' for model '{clip(model_name)}' must name a file "
            "inside the model directory")
    return Path(model_dir) / normalized


def check_config_paths(config, model_dir: Path) -> None:
    """Refuse a config naming any file outside its model directory (before anything loads)."""
    name = config.name
    if config.default_model_filename:
        # Relative to each version folder; "1" stands for any of them (all are one level down).
        confined_path(model_dir, config.default_model_filename, "default_model_filename",
                      name, base="1")
    for key, filename in config.cc_model_filenames.items():
        confined_path(model_dir, filename, f"cc_model_filenames['{clip(key)}']", name, base="1")
    for output in config.output:
        if output.label_filename:
            confined_path(model_dir, output.label_filename,
                          f"label_filename of output '{clip(output.name)}'", name)
    for warmup in config.model_warmup:
        for input_name, data in warmup.inputs.items():
            if data.WhichOneof("input_data_type") == "input_data_file":
                confined_path(model_dir, data.input_data_file,
                              f"model_warmup '{clip(warmup.name)}' input '{clip(input_name)}' "
                              "input_data_file", name, base=WARMUP_FOLDER)
    for state in config.sequence_batching.state:
        for initial in state.initial_state:
            if initial.WhichOneof("state_data") == "data_file":
                confined_path(model_dir, initial.data_file,
                              f"initial_state '{clip(initial.name)}' data_file", name,
                              base=INITIAL_STATE_FOLDER)
