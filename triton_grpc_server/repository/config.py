"""config.pbtxt: parse, auto-complete through the backend, fill defaults, validate.

The result is the ``ModelConfig`` message that ModelConfig returns and that the
data plane validates requests against.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

from google.protobuf import json_format, text_format

from .._proto import model_config_pb2 as mc
from ..backends import backend_name_for, load_backend_class, platform_for, FILE_HINTS
from ..errors import InvalidArgument, TritonError
from ..tensors import CONFIG_TO_WIRE
from .paths import check_config_paths, confined_path

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
DEFAULT_CPU_INSTANCE_COUNT = 2


class AutoCompleteFailed(TritonError):
    """Auto-complete could not read the model file.

    Triton auto-completes inside each version's load, so this fails the
    versions (UNAVAILABLE, with the reason) rather than the model.
    """

    def __init__(self, message: str, config):
        super().__init__(message)
        self.config = config


def config_path(model_dir: Path, config_name: str = "") -> Path:
    """``configs/<name>.pbtxt`` when ``--model-config-name`` names one that exists, else
    ``config.pbtxt`` (Triton falls back to the default file)."""
    if config_name:
        custom = model_dir / "configs" / f"{config_name}.pbtxt"
        if custom.is_file():
            return custom
    return model_dir / CONFIG_FILE


def read_config(model_dir: Path, override_json: Optional[str] = None, config_name: str = ""):
    """Parse config.pbtxt (or the JSON override that replaces it).

    A missing config.pbtxt gives an empty config, to be auto-completed.
    """
    config = mc.ModelConfig()
    if override_json is not None:
        try:
            json_format.Parse(override_json, config)
        except (json_format.ParseError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"failed to parse model config override: {exc}") from None
        return config
    path = config_path(model_dir, config_name)
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except (text_format.ParseError, ValueError) as exc:  # ValueError: an integer out of range
            raise InvalidArgument(f"failed to read text proto from {path}: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"failed to read {path}: {exc}") from None
    return config


def resolve_backend_name(config, model_dir: Path) -> str:
    """The backend serving a model: from ``backend``/``platform``, else from the files present."""
    if config.backend or config.platform:
        return backend_name_for(config.platform, config.backend)
    for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        for file_name, backend in FILE_HINTS.items():
            if (version_dir / file_name).exists():
                return backend
    raise InvalidArgument(
        f"unable to find backend for model '{config.name or model_dir.name}': "
        "must specify 'platform' or 'backend' in config")


def complete_config(config, model_name: str, model_dir: Path,
                    find_model_files: Callable[[object], list[Path]], auto_complete: bool):
    """Fill a parsed config: name, backend/platform, auto-complete, defaults; then validate.

    ``find_model_files(config)`` lists the model files of the versions about to
    load, oldest first; the newest is what auto-complete reads, as in Triton.
    """
    if config.name and config.name != model_name:
        raise InvalidArgument(
            f"unexpected directory name '{model_name}' for model '{config.name}', "
            "directory name must equal model name")
    config.name = model_name
    # Before auto-complete and the defaults, which read instance kinds and data types.
    check_enum_numbers(config)
    backend = resolve_backend_name(config, model_dir)
    config.backend = backend
    if not config.platform:
        config.platform = platform_for(backend)
    backend_class = load_backend_class(backend)
    if not config.default_model_filename:
        config.default_model_filename = backend_class.default_model_filename
    # Before anything reads a file the config names: it may come from a client.
    check_config_paths(config, model_dir)
    model_paths = find_model_files(config)
    if auto_complete and model_paths:
        try:
            backend_class.auto_complete_config(config, model_paths[-1])
        except TritonError as exc:
            raise AutoCompleteFailed(exc.message, config) from None
    fill_defaults(config, gpu_default=_gpu_default(backend_class, config))
    validate_config(config)
    return config, backend_class


def _gpu_default(backend_class, config) -> bool:
    """Whether KIND_AUTO (or no instance_group) means the GPU for this model; logged."""
    if config.platform == "ensemble" or (
            config.instance_group and all(g.kind != mc.ModelInstanceGroup.KIND_AUTO
                                          for g in config.instance_group)):
        return False
    on_gpu = bool(backend_class.gpu_by_default())
    log.info("model '%s': instances without a kind placed on %s", config.name,
             "KIND_GPU" if on_gpu else "KIND_CPU (no usable GPU for this backend)")
    return on_gpu


def fill_defaults(config, gpu_default: bool = False) -> None:
    """The defaults Triton writes into a normalized config.

    Without an ``instance_group``, or with KIND_AUTO, instances go on the GPU when
    ``gpu_default`` (one instance per visible GPU), else two on the CPU, as Triton.
    """
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.HasField("sequence_batching"):
        from ..scheduler.sequence_batcher import fill_sequence_defaults

        fill_sequence_defaults(config)
    if config.platform == "ensemble":
        return  # an ensemble has no instances of its own (Triton leaves instance_group empty)
    auto = mc.ModelInstanceGroup.KIND_GPU if gpu_default else mc.ModelInstanceGroup.KIND_CPU
    if not config.instance_group:
        group = config.instance_group.add()
        group.kind = auto
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = auto
        if group.kind == mc.ModelInstanceGroup.KIND_GPU and not group.gpus:
            from .. import gpu

            group.gpus.extend(range(gpu.device_count()))  # Triton: every visible GPU
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}" if len(config.instance_group) > 1 else config.name
        if group.count < 1:
            # Triton's SetDefaultInstanceCount: two CPU instances, one per GPU
            group.count = DEFAULT_CPU_INSTANCE_COUNT if group.kind in (
                mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_AUTO) else 1
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = mc.ModelInstanceGroup.KIND_CPU


def _unnamed_enum_numbers(message, path: str = ""):
    """(field path, enum descriptor, number) for every enum value in ``message`` that its enum
    has no name for, in nested messages, repeated fields and maps too."""
    for field, value in message.ListFields():
        where = path + field.name
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            items = [(f"{where}[{key!r}]", value[key]) for key in sorted(value)]
            field = value_field
        elif field.is_repeated:
            items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
        else:
            items = [(where, value)]
        for item_path, item in items:
            if field.message_type is not None:
                yield from _unnamed_enum_numbers(item, item_path + ".")
            elif field.enum_type is not None and item not in field.enum_type.values_by_number:
                yield item_path, field.enum_type, item


def check_enum_numbers(config) -> None:
    """Refuse an enum field set to a number its enum has no name for.

    proto3 enums are open, so both the text and the JSON parser accept any number
    (``instance_group [{ kind: 7 }]``); left in, it would fail later wherever the
    value is looked up by name.
    """
    for where, enum, number in _unnamed_enum_numbers(config):
        names = ", ".join(enum.values_by_name)
        raise InvalidArgument(
            f"unknown value {number} for '{where}' of model '{config.name}': "
            f"{enum.full_name.removeprefix('inference.')} is one of {names}")


def validate_config(config) -> None:
    name = config.name
    check_enum_numbers(config)  # again: auto-complete may have added fields
    if config.max_batch_size < 0:
        raise InvalidArgument(f"'max_batch_size' must be non-negative value for {name}")
    if not config.input:
        raise InvalidArgument(f"model input must be specified for {name}")
    if not config.output:
        raise InvalidArgument(f"model output must be specified for {name}")
    seen = set()
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            if not tensor.name:
                raise InvalidArgument(f"model {kind} must specify 'name' for {name}")
            if (kind, tensor.name) in seen:
                raise InvalidArgument(f"duplicate {kind} name '{tensor.name}' for {name}")
            seen.add((kind, tensor.name))
            # proto3 enums are open: a config may hold a number DataType has no name for
            known = mc.DataType.DESCRIPTOR.values_by_number.get(tensor.data_type)
            if known is None or known.name not in CONFIG_TO_WIRE:
                raise InvalidArgument(
                    f"model {kind} '{tensor.name}' must specify 'data_type' for {name}")
            if not tensor.dims and not tensor.HasField("reshape") and config.max_batch_size == 0:
                raise InvalidArgument(f"model {kind} '{tensor.name}' must specify 'dims' for {name}")
            for dim in tensor.dims:
                if dim < -1 or dim == 0:
                    raise InvalidArgument(
                        f"model {kind} '{tensor.name}' dimension must be integer >= 1, or -1 to "
                        f"indicate a variable-size dimension for {name}")
    if config.HasField("sequence_batching"):
        from ..scheduler.sequence_batcher import validate_sequence_config

        validate_sequence_config(config)
    if config.HasField("ensemble_scheduling") or config.platform == "ensemble":
        from ..scheduler.ensemble import plan_ensemble

        plan_ensemble(config)
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        # Triton ignores the batcher for non-batching models with a warning.
        log.warning("model '%s': dynamic_batching ignored because max_batch_size is 0", name)


# data_type enum value -> wire datatype, so the hot path skips protobuf's enum-name lookup.
_WIRE_BY_ENUM = {number: CONFIG_TO_WIRE[name] for name, number in mc.DataType.items()
                 if name in CONFIG_TO_WIRE}


def wire_datatype(tensor) -> str:
    wire = _WIRE_BY_ENUM.get(tensor.data_type)
    if wire is None:  # not a wire type: the original lookup raises exactly as before
        return CONFIG_TO_WIRE[mc.DataType.Name(tensor.data_type)]
    return wire


def labels_for(config, model_dir: Path) -> dict[str, list[str]]:
    """Output name -> labels read from its ``label_filename`` (a line a label)."""
    labels = {}
    for output in config.output:
        if output.label_filename:
            path = confined_path(model_dir, output.label_filename,
                                 f"label_filename of output '{output.name}'", config.name)
            try:
                labels[output.name] = path.read_text().splitlines()
            except OSError as exc:
                raise TritonError(f"failed to read label file {path}: {exc}") from None
    return labels
