"""`export`: convert a Keras model to TFLite, keeping its zeros small on disk.

A pruned model's zeros only save space in TFLite when the converter is asked to encode sparse
tensors (`Optimize.EXPERIMENTAL_SPARSITY`); quantization adds `Optimize.DEFAULT`. The written file
is checked by running it: with `--data`, Keras and TFLite outputs on the same samples are
compared, so a broken conversion is caught where it is made, not on a device.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparseprune.choices import Quantize
from sparseprune.errors import InputError, describe
from sparseprune.export.litert import (
    PRUNED_FRACTION,
    file_kernels,
    layer_runs,
    require_sparse_failures,
)
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.formats.npz import read_npz
from sparseprune.formats.tflite import read_tflite
from sparseprune.keras_ops.bench import is_tflite
from sparseprune.keras_ops.interpreters import make_interpreter
from sparseprune.keras_ops.loading import check_loadable, load_keras_model
from sparseprune.keras_ops.verify import as_array
from sparseprune.schema import JsonResult

DATA_KEYS = ("x_train", "x")  # calibration wants training-distribution inputs
CALIBRATION_SAMPLES = 200
CHECK_SAMPLES = 64


@dataclass
class ExportResult(JsonResult):
    """Sizes before and after conversion and, with data, the Keras-vs-TFLite output check."""

    DOCUMENT = "sparseprune.render.bench_output"

    model: str
    output: str
    quantize: Quantize | None
    sparsity_optimization: bool
    input_size: int
    output_size: int
    check: dict[str, Any] | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)  # per kernel: sparse in LiteRT?
    failures: list[str] = field(default_factory=list)  # --require-sparse: kernels run dense


def export_model(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    quantize: Quantize | str | None = None,
    data: str | os.PathLike[str] | None = None,
    sparsity: bool = True,
    force: bool = False,
    unsafe: bool = False,
    require_sparse: bool = False,
    pruned_at: float = PRUNED_FRACTION,
) -> ExportResult:
    """Convert `path` to TFLite at `output` (atomically) and measure what the conversion did.

    `sparsity` asks the converter to encode zero-heavy tensors sparsely; `quantize` is int8
    (calibrated on `data`) or float16. The written flatbuffer is read back: `layers` says per
    kernel whether LiteRT runs it sparse and why; with `require_sparse`, `failures` lists
    pruned kernels that would run dense; a kernel counts as pruned from `pruned_at` zeros
    (default 10%: trained kernels have almost no exact zeros, and below ~30% the converter does
    not encode a tensor sparse at all, so any kernel prune touched is checked). With `data`,
    Keras and TFLite outputs are compared.
    """
    path, target = os.fspath(path), Path(output)
    quantize = None if quantize is None else Quantize.parse(quantize, "quantize")
    if not 0 < pruned_at <= 1:
        raise InputError(f"--pruned-at must be in (0, 1], got {pruned_at}.")
    samples, data_label = _check_request(path, target, quantize, data, force, unsafe)
    model = load_keras_model(path, unsafe)
    if samples is not None:
        samples = fit_inputs(model, samples, data_label)
    content = convert(model, quantize, samples, sparsity)
    with atomic_path(target, force=force, inputs=(path,)) as temp:
        temp.write_bytes(content)
    rows = layer_runs(read_tflite(content, str(target)), file_kernels(path), sparsity, pruned_at)
    result = ExportResult(
        model=path,
        output=str(target),
        quantize=quantize,
        sparsity_optimization=sparsity,
        input_size=os.path.getsize(path),
        output_size=len(content),
        layers=[row.to_dict() for row in rows],
        failures=require_sparse_failures(rows) if require_sparse else [],
    )
    if samples is not None:
        result.check = {"data": data_label, **compare_outputs(model, content, samples)}
    return result


def _check_request(
    path: str,
    target: Path,
    quantize: Quantize | None,
    data: str | os.PathLike[str] | None,
    force: bool,
    unsafe: bool,
) -> tuple[np.ndarray | None, str | None]:
    """Every refusal happens here, before TensorFlow is imported (a fast, clear exit 2)."""
    if quantize is Quantize.INT8 and data is None:
        raise InputError(
            "--quantize int8 needs --data FILE.npz (x_train or x) to calibrate activation ranges."
        )
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist or is not a file.")
    if is_tflite(path):
        raise InputError(f"{path} is already a TFLite model; export needs a Keras model.")
    check_output_path(target, force, (Path(path),))
    check_loadable(path, unsafe)
    if data is None:
        return None, None
    return load_inputs(data)


def load_inputs(data: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
    """Model inputs from an .npz: x_train, else x (float arrays become float32)."""
    arrays = read_npz(data)
    key = next((k for k in DATA_KEYS if k in arrays), None)
    if key is None:
        names = ", ".join(sorted(arrays)[:12]) or "nothing"
        raise InputError(f"data file {data} needs an array x_train or x; it has {names}.")
    x = arrays[key]
    if x.ndim == 0 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"data file {data}: '{key}' must be a non-empty numeric array.")
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x, f"{data}:{key}"


def fit_inputs(model: Any, x: np.ndarray, label: str | None) -> np.ndarray:
    """Check --data against the model's single input (shape, dtype) before converting."""
    if len(model.inputs) != 1:
        raise InputError(f"--data supports single-input models; this one has {len(model.inputs)}.")
    expected = tuple(model.inputs[0].shape)[1:]
    fits = len(expected) == x.ndim - 1 and all(
        e is None or e == d for e, d in zip(expected, x.shape[1:], strict=True)
    )
    if not fits:
        shape = "×".join("?" if d is None else str(d) for d in expected)
        raise InputError(f"{label} has samples of shape {x.shape[1:]}; the model takes {shape}.")
    return x.astype(str(model.inputs[0].dtype).split(".")[-1])


def convert(
    model: Any, quantize: Quantize | None, samples: np.ndarray | None, sparsity: bool = True
) -> bytes:
    """TFLite flatbuffer bytes; falls back to a SavedModel export if from_keras_model fails."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        return _run_converter(converter, quantize, samples, sparsity)
    except InputError:
        raise
    except Exception as first:  # the converter raises many types; retry the other route once
        with tempfile.TemporaryDirectory(prefix="sparseprune-export-") as folder:
            try:
                with _quiet_stdout():
                    model.export(folder, format="tf_saved_model")
                converter = tf.lite.TFLiteConverter.from_saved_model(folder)
                return _run_converter(converter, quantize, samples, sparsity)
            except Exception as error:
                raise InputError(
                    f"TFLite conversion failed ({describe(first)}; via SavedModel: "
                    f"{describe(error)})."
                ) from error


def _run_converter(
    converter: Any, quantize: Quantize | None, samples: np.ndarray | None, sparsity: bool
) -> bytes:
    import tensorflow as tf

    optimizations = [tf.lite.Optimize.DEFAULT] if quantize else []
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize is Quantize.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if quantize is Quantize.INT8 and samples is not None:
        calibration = samples[:CALIBRATION_SAMPLES]
        converter.representative_dataset = lambda: ([row[None]] for row in calibration)
    with _quiet_stdout():  # the converter prints "Saved artifact at ..." on stdout
        return bytes(converter.convert())


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    """Drop the converter's prints (a temp SavedModel's signature) and Python warnings: stdout
    must stay parseable for --json, and the user never sees that temporary folder."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def compare_outputs(model: Any, content: bytes, samples: np.ndarray) -> dict[str, Any]:
    """Max/mean |Δ| of Keras vs TFLite outputs on the first samples; top-1 agreement if classes."""
    x = samples[:CHECK_SAMPLES]
    expected = as_array(model.predict(x, verbose=0)).astype(np.float64)
    actual = run_tflite(content, x).astype(np.float64)
    if expected.shape != actual.shape:
        raise InputError(
            f"TFLite output shape {actual.shape} differs from Keras's {expected.shape}."
        )
    difference = np.abs(expected - actual)
    check = {
        "samples": len(x),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": None,
    }
    if expected.ndim == 2 and expected.shape[1] > 1:
        check["top1_agreement"] = float(np.mean(expected.argmax(1) == actual.argmax(1)))
    return check


def run_tflite(content: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Outputs of a single-input TFLite model for a whole batch (the input is resized to it)."""
    interpreter = make_interpreter(content=content, threads=threads)
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], [len(x), *x.shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], _quantized_input(x, detail))
    interpreter.invoke()
    outputs = [
        _dequantized(interpreter.get_tensor(d["index"]), d)
        for d in interpreter.get_output_details()
    ]
    return as_array(outputs if len(outputs) > 1 else outputs[0])


def _quantized_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float inputs for float models; scaled integers if the model takes quantized inputs."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.integer) and scale:
        return np.round(x / scale + zero).astype(dtype)
    return x.astype(dtype)


def _dequantized(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float64) - zero) * scale
    return y
