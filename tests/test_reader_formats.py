"""The reader against counts computed independently by Keras from `layer.get_weights()`.

Every layout the reader supports is saved for real by Keras 3 or tf_keras (or rewritten from such a
file to an older layout) in `tests/fixtures/make_fixtures.py`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from conftest import SAMPLES

from sparseprune import inspect_model, open_model
from sparseprune.formats.model import (
    FORMAT_H5,
    FORMAT_H5_WEIGHTS,
    FORMAT_KERAS,
    FORMAT_WEIGHTS_H5,
)
from sparseprune.formats.reader import _reads_as_zip
from sparseprune.layers.table import is_known

FILES = {
    "k3_seq.keras": FORMAT_KERAS,
    "k3_func.keras": FORMAT_KERAS,
    "k3_rnn.keras": FORMAT_KERAS,
    "k3_seq.h5": FORMAT_H5,
    "k3_func.h5": FORMAT_H5,
    "k3_seq.weights.h5": FORMAT_WEIGHTS_H5,
    "tk_seq.keras": FORMAT_KERAS,
    "tk_func.keras": FORMAT_KERAS,
    "tk_seq.h5": FORMAT_H5,
    "tk_func.h5": FORMAT_H5,
    "tk_seq_weights.h5": FORMAT_H5_WEIGHTS,
    "old_naming.h5": FORMAT_H5,
    "split_names.h5": FORMAT_H5,
    "lcd.keras": FORMAT_KERAS,
    "lambda.keras": FORMAT_KERAS,
    "lambda.h5": FORMAT_H5,
    "custom.keras": FORMAT_KERAS,
    "nan.keras": FORMAT_KERAS,
}
STAT_KEYS = ("params", "zeros", "near_zero", "nan", "inf", "dead_units")


def _expected_role(name: str, row: dict, index: int) -> str:
    """Keras 3 archives number variables; a custom class's variable names are not in the file."""
    numbered = FILES[name] in (FORMAT_KERAS, FORMAT_WEIGHTS_H5)
    return f"var{index}" if numbered and not is_known(row["class"]) else row["role"]


def _by_layer(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["layer"], []).append(row)
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_counts_match_keras(name: str, fixture_dir: Path, expected: dict) -> None:
    report = inspect_model(str(fixture_dir / name), show_all=True)
    assert report.format == FILES[name]
    got = _by_layer(
        [
            {
                "layer": w.tensor.layer,
                "role": w.tensor.role,
                "shape": list(w.tensor.shape),
                **{key: getattr(w.stats, key) for key in STAT_KEYS},
            }
            for w in report.weights
        ]
    )
    want = _by_layer(expected[name]["weights"])
    for rows in want.values():
        for index, row in enumerate(rows):
            row["role"] = _expected_role(name, row, index)
    assert sorted(got) == sorted(want)
    for layer, rows in want.items():
        assert [(r["role"], r["shape"]) for r in got[layer]] == [
            (r["role"], r["shape"]) for r in rows
        ], layer
        for mine, theirs in zip(got[layer], rows, strict=True):
            assert {k: mine[k] for k in STAT_KEYS} == {k: theirs[k] for k in STAT_KEYS}, layer


@pytest.mark.parametrize("name", sorted(FILES))
def test_layer_classes_and_prunable_flags(name: str, fixture_dir: Path, expected: dict) -> None:
    with open_model(fixture_dir / name) as model:
        got = {(t.layer, t.role): t for t in model.model_tensors}
    seen: dict[str, int] = {}
    for row in expected[name]["weights"]:
        index = seen[row["layer"]] = seen.get(row["layer"], -1) + 1
        tensor = got[(row["layer"], _expected_role(name, row, index))]
        if FILES[name] != FORMAT_H5_WEIGHTS:  # legacy weights-only files carry no classes
            assert tensor.layer_class == row["class"]
        default_prunable = (row["class"], row["role"]) in {
            ("Dense", "kernel"),
            ("Conv2D", "kernel"),
            ("SeparableConv2D", "pointwise_kernel"),
            ("Embedding", "embeddings"),
            ("LSTM", "kernel"),
            ("LSTM", "recurrent_kernel"),
        }
        if tensor.layer_class is not None:
            assert tensor.prunable == default_prunable, (row["layer"], row["role"])


@pytest.mark.parametrize("name", sorted(FILES))
def test_optimizer_tensors_reported_apart(name: str, fixture_dir: Path, expected: dict) -> None:
    with open_model(fixture_dir / name) as model:
        assert len(model.optimizer_tensors) == expected[name]["optimizer_tensors"]
        assert all(t.kind == "weight" for t in model.model_tensors)
    report = inspect_model(str(fixture_dir / name), show_all=True)
    assert report.totals.params == sum(r["params"] for r in expected[name]["weights"])


def test_lambda_and_custom_layers_are_flagged(fixture_dir: Path) -> None:
    for name in ("lambda.keras", "lambda.h5"):
        with open_model(fixture_dir / name) as model:
            assert model.flags().get("lambda") == ["lam"]
    with open_model(fixture_dir / "custom.keras") as model:
        assert model.flags().get("custom_module") == ["scale"]


def test_nan_and_inf_are_counted_not_fatal(fixture_dir: Path) -> None:
    report = inspect_model(str(fixture_dir / "nan.keras"))
    kernel = next(w for w in report.weights if w.tensor.role == "kernel")
    assert (kernel.stats.nan, kernel.stats.inf) == (2, 1)


def _zip_bytes(comment: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.comment = comment
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("tail", "is_zip"),
    [
        (b"", False),  # a plain .h5: decided without zipfile
        (_zip_bytes(b""), True),
        (_zip_bytes(b"c" * 0xFFFF), True),  # end record at the far edge of zipfile's search
        (_zip_bytes(b"") + b"\0" * 70_000, False),  # end record beyond it: zipfile misses it too
    ],
    ids=["h5", "zip-appended", "longest-comment", "record-out-of-reach"],
)
def test_zip_check_agrees_with_zipfile(tail: bytes, is_zip: bool) -> None:
    """The tail pre-check only skips files in which zipfile would find no archive."""
    data = (SAMPLES / "mlp.h5").read_bytes() + tail
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            by_zipfile = bool(archive.infolist())
    except zipfile.BadZipFile:
        by_zipfile = False
    assert by_zipfile == is_zip
    assert _reads_as_zip(io.BytesIO(data), len(data)) == is_zip
