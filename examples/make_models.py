#!/usr/bin/env python
"""Generate the bundled example model repository (``examples/models``).

The models mirror the names, tensors and batching of Triton's example
repository (``triton-inference-server/server`` ``docs/examples/model_repository``),
which Triton's published client examples assume:

==================  =======================================================
``simple``          INPUT0, INPUT1 INT32 [16] -> OUTPUT0 = sum, OUTPUT1 = diff
``simple_int8``     the same in INT8 (wraps around on overflow)
``simple_string``   the same on BYTES tensors holding decimal strings
``simple_identity`` BYTES [-1] -> BYTES [-1] (a Python-backend ``model.py``)
``densenet_onnx``   stand-in with DenseNet's tensors: ``data_0`` FP32
                    [3,224,224] -> ``fc6_1`` FP32 [1000] plus a labels file
``inception_onnx``  stand-in with Inception V3's tensors: ``input:0`` FP32
                    [299,299,3] -> ``InceptionV3/Predictions/Softmax:0``
                    FP32 [1001] plus a labels file
``simple_sequence`` sequence model (direct strategy): OUTPUT =
                    READY * (INPUT + START), Triton's own ONNX graph
``simple_dyna_sequence``  sequence model (oldest strategy): OUTPUT =
                    READY * (INPUT + START + END * CORRID)
==================  =======================================================

Two more repositories are built on request: ``--ensemble DIR`` writes an
ensemble example (``preprocess`` feeding ``densenet_onnx``), and
:func:`make_string_dyna_sequence` adds the ``simple_string_dyna_sequence``
model that Triton's CI builds for its ``-d`` example runs (STRING
correlation ids, an accumulator kept as implicit state).

Usage::

    python examples/make_models.py [OUTDIR] [--check]

``OUTDIR`` defaults to ``examples/models`` next to this file.  Output is
deterministic: running twice writes byte-identical files.  The ``.onnx`` files
are build products (ignored by git); ``config.pbtxt`` and the labels file are
committed and rewritten identically.  ``--check`` runs every model once in
ONNX Runtime and verifies the results.

The builder functions (``make_add_sub``, ``make_identity``,
``make_densenet_standin``) are importable so tests can build models in
temporary directories.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR version 8 is the one that goes with opset 17; any ONNX Runtime >= 1.13 loads it.
IR_VERSION = 8
PRODUCER = "triton_grpc_server.examples"

DEFAULT_OUTDIR = Path(__file__).resolve().parent / "models"

# ONNX element type -> Triton config ``data_type``.
_CONFIG_TYPES = {
    TensorProto.BOOL: "TYPE_BOOL",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32",
    TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.STRING: "TYPE_STRING",
}

_Dim = Optional[Union[int, str]]  # an ONNX dim: fixed size, symbolic name, or unknown


# --------------------------------------------------------------------------
# Writing helpers
# --------------------------------------------------------------------------

def _save(model: onnx.ModelProto, path: Path) -> Path:
    """Check ``model`` and write it to ``path`` (creating parent dirs)."""
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # SerializeToString is deterministic for a given proto (no map fields are used).
    path.write_bytes(model.SerializeToString())
    return path


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
    )


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def _tensor_block(name: str, data_type: str, dims: Sequence[int], extra: Sequence[str] = ()) -> str:
    # Triton's example configs put ``format`` before ``dims`` and the rest after.
    lines = [
        "  {",
        f'    name: "{name}"',
        f"    data_type: {data_type}",
        *(f"    {line}" for line in extra if line.startswith("format")),
        f"    dims: [ {', '.join(str(d) for d in dims)} ]",
        *(f"    {line}" for line in extra if not line.startswith("format")),
        "  }",
    ]
    return "\n".join(lines)


def config_pbtxt(
    name: str,
    max_batch_size: int,
    inputs: Sequence[tuple],
    outputs: Sequence[tuple],
    platform: str = "onnxruntime_onnx",
    extra: str = "",
) -> str:
    """Render a ``config.pbtxt`` in the layout of Triton's example repository.

    ``inputs``/``outputs`` are ``(name, data_type, dims)`` or
    ``(name, data_type, dims, extra_lines)`` where ``extra_lines`` are raw
    pbtxt lines such as ``'format: FORMAT_NCHW'`` or
    ``'reshape { shape: [ 1, 1000, 1, 1 ] }'``.  ``extra`` is appended
    verbatim (``sequence_batching``, ``instance_group``, ``parameters`` ...).
    """
    def blocks(tensors: Sequence[tuple]) -> str:
        return ",\n".join(_tensor_block(*t) for t in tensors)

    return (
        "# Generated by examples/make_models.py; edit that script, not this file.\n"
        f'name: "{name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{blocks(inputs)}\n]\n"
        f"output [\n{blocks(outputs)}\n]\n"
        f"{extra}"
    )


# --------------------------------------------------------------------------
# Model builders
# --------------------------------------------------------------------------

def make_add_sub(
    path: Path | str,
    onnx_dtype: int,
    dims: Sequence[_Dim] = (16,),
    batch_dim: _Dim = "batch",
    input_names: Sequence[str] = ("INPUT0", "INPUT1"),
    output_names: Sequence[str] = ("OUTPUT0", "OUTPUT1"),
) -> Path:
    """Write an ONNX model computing OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 - INPUT1.

    ``onnx_dtype`` is a ``TensorProto`` element type.  For ``TensorProto.STRING``
    the inputs hold decimal integers as strings; they are cast to INT32, added
    and subtracted, and cast back to strings (``"1" + "1" -> "2"``), which is
    what Triton's ``simple_string`` model does.  ``batch_dim`` prepends a
    leading dimension (a symbolic name keeps it dynamic); pass ``None`` for a
    model without a batch dimension.
    """
    shape = ([batch_dim] if batch_dim is not None else []) + list(dims)
    in0, in1 = input_names
    out0, out1 = output_names
    nodes = []
    if onnx_dtype == TensorProto.STRING:
        nodes += [
            helper.make_node("Cast", [in0], ["in0_int"], to=TensorProto.INT32, name="cast_in0"),
            helper.make_node("Cast", [in1], ["in1_int"], to=TensorProto.INT32, name="cast_in1"),
            helper.make_node("Add", ["in0_int", "in1_int"], ["sum_int"], name="add"),
            helper.make_node("Sub", ["in0_int", "in1_int"], ["diff_int"], name="sub"),
            helper.make_node("Cast", ["sum_int"], [out0], to=TensorProto.STRING, name="cast_out0"),
            helper.make_node("Cast", ["diff_int"], [out1], to=TensorProto.STRING, name="cast_out1"),
        ]
    else:
        nodes += [
            helper.make_node("Add", [in0, in1], [out0], name="add"),
            helper.make_node("Sub", [in0, in1], [out1], name="sub"),
        ]
    graph = helper.make_graph(
        nodes,
        "add_sub",
        [helper.make_tensor_value_info(n, onnx_dtype, shape) for n in input_names],
        [helper.make_tensor_value_info(n, onnx_dtype, shape) for n in output_names],
    )
    return _save(_model(graph), Path(path))


def make_identity(
    path: Path | str,
    onnx_dtype: int = TensorProto.STRING,
    dims: Sequence[_Dim] = ("n",),
    batch_dim: _Dim = "batch",
    input_name: str = "INPUT0",
    output_name: str = "OUTPUT0",
) -> Path:
    """Write an ONNX model whose single output is a copy of its single input."""
    shape = ([batch_dim] if batch_dim is not None else []) + list(dims)
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [output_name], name="identity")],
        "identity",
        [helper.make_tensor_value_info(input_name, onnx_dtype, shape)],
        [helper.make_tensor_value_info(output_name, onnx_dtype, shape)],
    )
    return _save(_model(graph), Path(path))


def make_densenet_standin(
    path: Path | str,
    num_classes: int = 1000,
    hidden: int = 16,
    image_size: int = 224,
    seed: int = 0,
    input_name: str = "data_0",
    output_name: str = "fc6_1",
) -> Path:
    """Write a tiny classifier with DenseNet-121's ONNX tensors.

    Input ``data_0`` FP32 [1, 3, H, W]; output ``fc6_1`` FP32
    [1, num_classes, 1, 1] (logits, like the real model).  The graph is a fixed
    3x3 stride-2 convolution (``hidden`` channels) -> ReLU -> global average
    pool -> 1x1 convolution to ``num_classes``: cheap, deterministic and
    sensitive enough to colour and texture that different images get
    different top classes.  Weights come from ``numpy.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((hidden, 3, 3, 3)).astype(np.float32) * np.float32(0.5)
    b1 = rng.standard_normal(hidden).astype(np.float32) * np.float32(0.25)
    w2 = rng.standard_normal((num_classes, hidden, 1, 1)).astype(np.float32)
    b2 = rng.standard_normal(num_classes).astype(np.float32) * np.float32(0.1)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", [input_name, "conv1_w", "conv1_b"], ["conv1"],
                             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
            helper.make_node("GlobalAveragePool", ["relu1"], ["pool1"], name="pool1"),
            helper.make_node("Conv", ["pool1", "fc6_w", "fc6_b"], [output_name],
                             kernel_shape=[1, 1], name="fc6"),
        ],
        "densenet_standin",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, image_size, image_size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, num_classes, 1, 1])],
        initializer=[
            numpy_helper.from_array(w1, "conv1_w"),
            numpy_helper.from_array(b1, "conv1_b"),
            numpy_helper.from_array(w2, "fc6_w"),
            numpy_helper.from_array(b2, "fc6_b"),
        ],
    )
    return _save(_model(graph), Path(path))


def make_sequence_model(path: Path | str, dyna: bool = False, corrid_type: int = TensorProto.UINT64) -> Path:
    """Write Triton's stateless ONNX sequence graphs (the example repository's own).

    ``simple_sequence``: OUTPUT = READY * (INPUT + START).  ``dyna``
    (``simple_dyna_sequence``): OUTPUT = READY * (INPUT + START + END * CORRID),
    so the last request of a sequence adds its correlation id.  All tensors are
    INT32 [batch, 1] except CORRID (``corrid_type``).
    """
    shape = ["batch", 1]
    i32 = TensorProto.INT32
    controls = ["START", "END", "READY"] if dyna else ["START", "READY"]
    inputs = [helper.make_tensor_value_info("INPUT", i32, shape)]
    inputs += [helper.make_tensor_value_info(n, i32, shape) for n in controls]
    nodes = [helper.make_node("Add", ["INPUT", "START"], ["started"], name="add_start")]
    total = "started"
    if dyna:
        inputs.append(helper.make_tensor_value_info("CORRID", corrid_type, shape))
        nodes += [
            helper.make_node("Cast", ["CORRID"], ["corrid_i32"], to=i32, name="cast_corrid"),
            helper.make_node("Mul", ["END", "corrid_i32"], ["end_corrid"], name="mul_end"),
            helper.make_node("Add", ["started", "end_corrid"], ["with_corrid"], name="add_corrid"),
        ]
        total = "with_corrid"
    nodes.append(helper.make_node("Mul", ["READY", total], ["OUTPUT"], name="mul_ready"))
    graph = helper.make_graph(
        nodes, "dyna_sequence" if dyna else "sequence", inputs,
        [helper.make_tensor_value_info("OUTPUT", i32, shape)])
    return _save(_model(graph), Path(path))


def make_accumulator(path: Path | str) -> Path:
    """The dyna-sequence accumulator with STRING correlation ids, state held by the server.

    OUTPUT = OUTPUT_STATE = INPUT_STATE * (1 - START) + INPUT + END * int(CORRID):
    START restarts the sum at INPUT, every request adds its INPUT, and the last
    one (END) adds the correlation id read as a decimal number, which is what
    Triton's ``dyna_sequence`` test backend computes.
    """
    shape = ["batch", 1]
    i32 = TensorProto.INT32
    names = ["INPUT", "START", "END", "READY", "INPUT_STATE"]
    inputs = [helper.make_tensor_value_info(n, i32, shape) for n in names]
    inputs.append(helper.make_tensor_value_info("CORRID", TensorProto.STRING, shape))
    one = numpy_helper.from_array(np.ones([1, 1], np.int32), "one")
    nodes = [
        helper.make_node("Sub", ["one", "START"], ["keep"], name="keep"),
        helper.make_node("Mul", ["INPUT_STATE", "keep"], ["kept"], name="kept"),
        helper.make_node("Add", ["kept", "INPUT"], ["summed"], name="sum"),
        helper.make_node("Cast", ["CORRID"], ["corrid_i32"], to=i32, name="cast_corrid"),
        helper.make_node("Mul", ["END", "corrid_i32"], ["end_corrid"], name="mul_end"),
        helper.make_node("Add", ["summed", "end_corrid"], ["total"], name="add_corrid"),
        helper.make_node("Identity", ["total"], ["OUTPUT"], name="out"),
        helper.make_node("Identity", ["total"], ["OUTPUT_STATE"], name="out_state"),
    ]
    graph = helper.make_graph(
        nodes, "string_dyna_sequence", inputs,
        [helper.make_tensor_value_info("OUTPUT", i32, shape),
         helper.make_tensor_value_info("OUTPUT_STATE", i32, shape)], [one])
    return _save(_model(graph), Path(path))


def make_inception_standin(path: Path | str, num_classes: int = 1001, hidden: int = 16,
                           image_size: int = 299, seed: int = 1) -> Path:
    """Write a tiny classifier with Inception V3's ONNX tensors (as tf2onnx names them).

    Input ``input:0`` FP32 [1, H, W, 3] (NHWC); output
    ``InceptionV3/Predictions/Softmax:0`` FP32 [1, num_classes] (probabilities).
    Transpose -> 3x3 stride-2 convolution -> ReLU -> global average pool -> 1x1
    convolution -> flatten -> softmax, with weights from ``default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((hidden, 3, 3, 3)).astype(np.float32) * np.float32(0.5)
    b1 = rng.standard_normal(hidden).astype(np.float32) * np.float32(0.25)
    w2 = rng.standard_normal((num_classes, hidden, 1, 1)).astype(np.float32)
    b2 = rng.standard_normal(num_classes).astype(np.float32) * np.float32(0.1)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["input:0"], ["nchw"], perm=[0, 3, 1, 2], name="nchw"),
            helper.make_node("Conv", ["nchw", "conv1_w", "conv1_b"], ["conv1"],
                             kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
            helper.make_node("GlobalAveragePool", ["relu1"], ["pool1"], name="pool1"),
            helper.make_node("Conv", ["pool1", "logits_w", "logits_b"], ["logits4d"],
                             kernel_shape=[1, 1], name="logits"),
            helper.make_node("Flatten", ["logits4d"], ["logits"], axis=1, name="flatten"),
            helper.make_node("Softmax", ["logits"], ["InceptionV3/Predictions/Softmax:0"],
                             axis=-1, name="softmax"),
        ],
        "inception_standin",
        [helper.make_tensor_value_info("input:0", TensorProto.FLOAT, [1, image_size, image_size, 3])],
        [helper.make_tensor_value_info("InceptionV3/Predictions/Softmax:0", TensorProto.FLOAT,
                                       [1, num_classes])],
        initializer=[
            numpy_helper.from_array(w1, "conv1_w"),
            numpy_helper.from_array(b1, "conv1_b"),
            numpy_helper.from_array(w2, "logits_w"),
            numpy_helper.from_array(b2, "logits_b"),
        ],
    )
    return _save(_model(graph), Path(path))


def make_preprocess(path: Path | str, image_size: int = 224) -> Path:
    """Write the ensemble example's first step: UINT8 HWC image -> DenseNet's FP32 CHW input.

    ``IMAGE`` UINT8 [H, W, 3] -> ``PIXELS`` FP32 [3, H, W] scaled to [-1, 1]
    (x / 127.5 - 1), the scaling Triton's image_client applies for INCEPTION.
    """
    scale = numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale")
    one = numpy_helper.from_array(np.array(1, np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["IMAGE"], ["as_float"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("Mul", ["as_float", "scale"], ["scaled"], name="scale"),
            helper.make_node("Sub", ["scaled", "one"], ["centred"], name="centre"),
            helper.make_node("Transpose", ["centred"], ["PIXELS"], perm=[2, 0, 1], name="chw"),
        ],
        "preprocess",
        [helper.make_tensor_value_info("IMAGE", TensorProto.UINT8, [image_size, image_size, 3])],
        [helper.make_tensor_value_info("PIXELS", TensorProto.FLOAT, [3, image_size, image_size])],
        initializer=[scale, one],
    )
    return _save(_model(graph), Path(path))


def inception_labels(num_classes: int = 1001) -> list[str]:
    """``background`` then ``class_0001`` ...: Inception's 1001 classes start with background."""
    return ["background"] + [f"class_{i:04d}" for i in range(1, num_classes)]


def densenet_labels(num_classes: int = 1000) -> list[str]:
    """Label names for the stand-in: ``class_000`` ... ``class_999``.

    They contain no ``:``, which the classification extension uses as its
    separator (``value:index:label``).
    """
    width = max(3, len(str(num_classes - 1)))
    return [f"class_{i:0{width}d}" for i in range(num_classes)]


# --------------------------------------------------------------------------
# The repository
# --------------------------------------------------------------------------

def _add_sub_entry(name: str, onnx_dtype: int) -> Callable[[Path], None]:
    def build(model_dir: Path) -> None:
        make_add_sub(model_dir / "1" / "model.onnx", onnx_dtype)
        t = _CONFIG_TYPES[onnx_dtype]
        _write_text(model_dir / "config.pbtxt", config_pbtxt(
            name, 8,
            [("INPUT0", t, [16]), ("INPUT1", t, [16])],
            [("OUTPUT0", t, [16]), ("OUTPUT1", t, [16])],
        ))
    return build


# simple_identity is a Python-backend model in Triton's example repository.
SIMPLE_IDENTITY_MODEL = '''"""simple_identity: every request's INPUT0 comes back as OUTPUT0."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
                for r in requests]
'''


def _build_identity(model_dir: Path) -> None:
    _write_text(model_dir / "1" / "model.py", SIMPLE_IDENTITY_MODEL)
    _write_text(model_dir / "config.pbtxt", config_pbtxt(
        "simple_identity", 8,
        [("INPUT0", "TYPE_STRING", [-1])],
        [("OUTPUT0", "TYPE_STRING", [-1])],
    ).replace('platform: "onnxruntime_onnx"', 'backend: "python"'))


def _build_densenet(model_dir: Path) -> None:
    make_densenet_standin(model_dir / "1" / "model.onnx")
    _write_text(model_dir / "densenet_labels.txt", "".join(f"{label}\n" for label in densenet_labels()))
    # Triton's own densenet_onnx config (max_batch_size 0, reshapes to the
    # ONNX model's [1,3,224,224] input and [1,1000,1,1] output).
    _write_text(model_dir / "config.pbtxt", config_pbtxt(
        "densenet_onnx", 0,
        [("data_0", "TYPE_FP32", [3, 224, 224],
          ["format: FORMAT_NCHW", "reshape { shape: [ 1, 3, 224, 224 ] }"])],
        [("fc6_1", "TYPE_FP32", [1000],
          ["reshape { shape: [ 1, 1000, 1, 1 ] }", 'label_filename: "densenet_labels.txt"'])],
    ))


def _control(name: str, kind: str, setting: str) -> str:
    return (f'    {{\n      name: "{name}"\n      control [\n        {{\n'
            f'          kind: {kind}\n          {setting}\n        }}\n      ]\n    }}')


def sequence_batching_block(dyna: bool, corrid_type: str = "TYPE_UINT64", state: str = "") -> str:
    """The ``sequence_batching`` section of Triton's two example sequence configs."""
    flag = "int32_false_true: [ 0, 1 ]"
    controls = [_control("START", "CONTROL_SEQUENCE_START", flag)]
    if dyna:
        controls.append(_control("END", "CONTROL_SEQUENCE_END", flag))
    controls.append(_control("READY", "CONTROL_SEQUENCE_READY", flag))
    if dyna:
        controls.append(_control("CORRID", "CONTROL_SEQUENCE_CORRID", f"data_type: {corrid_type}"))
    strategy = ("  max_sequence_idle_microseconds: 10000000\n"
                "  oldest {\n    max_candidate_sequences: 1024\n"
                "    max_queue_delay_microseconds: 10000\n  }\n") if dyna else ""
    return ("sequence_batching {\n" + strategy + "  control_input [\n" + ",\n".join(controls)
            + "\n  ]\n" + state + "}\n")


def _sequence_config(name: str, dyna: bool, corrid_type: str = "TYPE_UINT64", state: str = "") -> str:
    if dyna:
        tail = ('parameters [\n  {\n    key: "execute_delay_ms"\n'
                '    value: { string_value: "3" }\n  }\n]\n'
                "instance_group [\n  {\n    count: 2\n    kind: KIND_CPU\n  }\n]\n")
    else:
        tail = "instance_group [\n  {\n    kind: KIND_CPU\n  }\n]\n"
    return config_pbtxt(name, 8, [("INPUT", "TYPE_INT32", [1])], [("OUTPUT", "TYPE_INT32", [1])],
                        extra=sequence_batching_block(dyna, corrid_type, state) + tail)


def _build_sequence(name: str, dyna: bool) -> Callable[[Path], None]:
    def build(model_dir: Path) -> None:
        make_sequence_model(model_dir / "1" / "model.onnx", dyna)
        _write_text(model_dir / "config.pbtxt", _sequence_config(name, dyna))
    return build


ACCUMULATOR_STATE = ("  state [\n    {\n      input_name: \"INPUT_STATE\"\n"
                     "      output_name: \"OUTPUT_STATE\"\n      data_type: TYPE_INT32\n"
                     "      dims: [ 1 ]\n    }\n  ]\n")


def make_string_dyna_sequence(model_dir: Path | str, name: str = "simple_string_dyna_sequence") -> Path:
    """The model Triton's CI adds for the ``-d`` example runs, as this server serves it.

    Triton copies ``simple_dyna_sequence``, makes CORRID ``TYPE_STRING`` and
    swaps in its C++ ``dyna_sequence`` test backend (a per-sequence
    accumulator). Here the accumulator is an ONNX graph whose running sum is
    implicit state (``INPUT_STATE``/``OUTPUT_STATE``) kept by the sequence
    batcher; the config is otherwise the same.
    """
    model_dir = Path(model_dir)
    make_accumulator(model_dir / "1" / "model.onnx")
    _write_text(model_dir / "config.pbtxt",
                _sequence_config(name, True, "TYPE_STRING", ACCUMULATOR_STATE))
    return model_dir


def _build_inception(model_dir: Path) -> None:
    make_inception_standin(model_dir / "1" / "model.onnx")
    _write_text(model_dir / "inception_labels.txt", "".join(f"{label}\n" for label in inception_labels()))
    _write_text(model_dir / "config.pbtxt", config_pbtxt(
        "inception_onnx", 0,
        [("input:0", "TYPE_FP32", [299, 299, 3],
          ["format: FORMAT_NHWC", "reshape { shape: [ 1, 299, 299, 3 ] }"])],
        [("InceptionV3/Predictions/Softmax:0", "TYPE_FP32", [1001],
          ["reshape { shape: [ 1, 1001 ] }", 'label_filename: "inception_labels.txt"'])],
    ))


ENSEMBLE_CONFIG = """# Generated by examples/make_models.py; edit that script, not this file.
name: "densenet_ensemble"
platform: "ensemble"
max_batch_size: 0
input [
  {
    name: "IMAGE"
    data_type: TYPE_UINT8
    dims: [ 224, 224, 3 ]
  }
]
output [
  {
    name: "CLASSIFICATION"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    label_filename: "densenet_labels.txt"
  }
]
ensemble_scheduling {
  step [
    {
      model_name: "preprocess"
      model_version: -1
      input_map { key: "IMAGE" value: "IMAGE" }
      output_map { key: "PIXELS" value: "preprocessed" }
    },
    {
      model_name: "densenet_onnx"
      model_version: -1
      input_map { key: "data_0" value: "preprocessed" }
      output_map { key: "fc6_1" value: "CLASSIFICATION" }
    }
  ]
}
"""


def generate_ensemble(outdir: Path | str) -> list[Path]:
    """The ensemble example: ``densenet_ensemble`` = ``preprocess`` -> ``densenet_onnx``.

    A repository of its own, because Triton's example clients expect exactly
    the eight models in ``examples/models``.
    """
    outdir = Path(outdir)
    make_preprocess(outdir / "preprocess" / "1" / "model.onnx")
    _write_text(outdir / "preprocess" / "config.pbtxt", config_pbtxt(
        "preprocess", 0, [("IMAGE", "TYPE_UINT8", [224, 224, 3])],
        [("PIXELS", "TYPE_FP32", [3, 224, 224])]))
    _build_densenet(outdir / "densenet_onnx")
    ensemble = outdir / "densenet_ensemble"
    (ensemble / "1").mkdir(parents=True, exist_ok=True)
    _write_text(ensemble / "densenet_labels.txt", "".join(f"{label}\n" for label in densenet_labels()))
    _write_text(ensemble / "config.pbtxt", ENSEMBLE_CONFIG)
    return [outdir / "preprocess", outdir / "densenet_onnx", ensemble]


MODELS: dict[str, Callable[[Path], None]] = {
    "simple": _add_sub_entry("simple", TensorProto.INT32),
    "simple_int8": _add_sub_entry("simple_int8", TensorProto.INT8),
    "simple_string": _add_sub_entry("simple_string", TensorProto.STRING),
    "simple_identity": _build_identity,
    "densenet_onnx": _build_densenet,
    "inception_onnx": _build_inception,
    "simple_sequence": _build_sequence("simple_sequence", dyna=False),
    "simple_dyna_sequence": _build_sequence("simple_dyna_sequence", dyna=True),
}


def generate(outdir: Path | str = DEFAULT_OUTDIR, names: Sequence[str] | None = None) -> list[Path]:
    """Write the models named in ``names`` (default: all) under ``outdir``."""
    outdir = Path(outdir)
    written = []
    for name in names or MODELS:
        MODELS[name](outdir / name)
        written.append(outdir / name)
    return written


# --------------------------------------------------------------------------
# Self-check in ONNX Runtime
# --------------------------------------------------------------------------

def check(outdir: Path | str = DEFAULT_OUTDIR) -> None:
    """Run each generated model once in ONNX Runtime and assert its results."""
    import onnxruntime as ort

    outdir = Path(outdir)

    def session(name: str) -> "ort.InferenceSession":
        return ort.InferenceSession(str(outdir / name / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])

    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    s, d = session("simple").run(None, {"INPUT0": a, "INPUT1": b})
    assert (s == a + b).all() and (d == a - b).all() and s.dtype == np.int32

    a8 = np.array([[127, -128] + list(range(14))], dtype=np.int8).repeat(2, axis=0)
    b8 = np.ones((2, 16), dtype=np.int8)
    s, d = session("simple_int8").run(None, {"INPUT0": a8, "INPUT1": b8})
    assert (s == a8 + b8).all() and (d == a8 - b8).all() and s.dtype == np.int8  # wraps

    # ONNX Runtime's Python API takes and returns string tensors as ``str``.
    sa = np.array([[str(x) for x in a[0]]], dtype=object)
    sb = np.array([["1"] * 16], dtype=object)
    s, d = session("simple_string").run(None, {"INPUT0": sa, "INPUT1": sb})
    assert [int(x) for x in s[0]] == list(a[0] + 1) and [int(x) for x in d[0]] == list(a[0] - 1)
    assert s[0][1] == "2"

    compile((outdir / "simple_identity" / "1" / "model.py").read_text(), "model.py", "exec")

    sess = session("densenet_onnx")
    rng = np.random.default_rng(1)
    tops = set()
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]:
        img = np.empty((1, 3, 224, 224), dtype=np.float32)
        img[0] = (np.asarray(colour, np.float32) / 127.5 - 1)[:, None, None]
        (logits,) = sess.run(None, {"data_0": img})
        assert logits.shape == (1, 1000, 1, 1) and logits.dtype == np.float32
        tops.add(int(logits.reshape(-1).argmax()))
    noise = rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    tops.add(int(sess.run(None, {"data_0": noise})[0].reshape(-1).argmax()))
    assert len(tops) >= 3, f"stand-in classifier too insensitive: top classes {sorted(tops)}"
    labels = (outdir / "densenet_onnx" / "densenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1000

    col = np.array([[3], [5]], dtype=np.int32)
    start, ready = np.array([[1], [0]], np.int32), np.array([[1], [1]], np.int32)
    (o,) = session("simple_sequence").run(None, {"INPUT": col, "START": start, "READY": ready})
    assert o.tolist() == [[4], [5]] and o.dtype == np.int32
    end, corrid = np.array([[0], [1]], np.int32), np.array([[7], [1000]], np.uint64)
    (o,) = session("simple_dyna_sequence").run(
        None, {"INPUT": col, "START": start, "END": end, "READY": ready, "CORRID": corrid})
    assert o.tolist() == [[4], [1005]]

    (probs,) = session("inception_onnx").run(
        None, {"input:0": rng.uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)})
    assert probs.shape == (1, 1001) and abs(float(probs.sum()) - 1) < 1e-4
    labels = (outdir / "inception_onnx" / "inception_labels.txt").read_text().splitlines()
    assert len(labels) == 1001


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", default=str(DEFAULT_OUTDIR),
                        help="model repository to write (default: examples/models)")
    parser.add_argument("--model", action="append", choices=sorted(MODELS),
                        help="generate only this model (repeatable)")
    parser.add_argument("--ensemble", metavar="DIR",
                        help="also write the ensemble example repository to DIR")
    parser.add_argument("--check", action="store_true",
                        help="run each model once in ONNX Runtime and verify the results")
    args = parser.parse_args(argv)
    for model_dir in generate(args.outdir, args.model):
        print(f"wrote {model_dir}")
    if args.ensemble:
        for model_dir in generate_ensemble(args.ensemble):
            print(f"wrote {model_dir}")
    if args.check:
        if args.model:
            parser.error("--check needs the full repository (omit --model)")
        check(args.outdir)
        print("check: all models ran in ONNX Runtime with the expected results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
