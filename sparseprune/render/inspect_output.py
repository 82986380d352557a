"""Machine and text formats of inspect reports: the JSON document, CSV and Markdown."""

from __future__ import annotations

from typing import Any

from sparseprune import schema
from sparseprune.inspect.inspection import ModelReport, WeightReport
from sparseprune.numeric.stats import TensorStats


def weight_dict(weight: WeightReport) -> dict[str, Any]:
    tensor, stats = weight.tensor, weight.stats
    return {
        "name": tensor.name,
        "role": tensor.role,
        "shape": list(tensor.shape),
        "dtype": tensor.dtype,
        "params": stats.params,
        "zeros": stats.zeros,
        "near_zero": stats.near_zero,
        "nan": stats.nan,
        "inf": stats.inf,
        "dead_units": stats.dead_units,
        "prunable": tensor.prunable,
        "litert": litert_dict(stats),
    }


def litert_dict(stats: TensorStats) -> dict[str, Any] | None:
    """Dense kernels: LiteRT's 4x1 blocks and whether the converter would keep them sparse."""
    verdict, blocks = stats.litert, stats.blocks
    if verdict is None or blocks is None:
        return None
    return {
        "block": list(blocks.block),
        "zero_blocks": blocks.zero_blocks,
        "blocks": blocks.blocks,
        "block_sparsity": blocks.zero_blocks / blocks.blocks,
        "runs_sparse": verdict.runs_sparse,
        "reason": verdict.reason,
    }


def model_dict(report: ModelReport) -> dict[str, Any]:
    totals = report.totals
    return {
        "path": report.path,
        "format": report.format,
        "keras_version": report.writer,
        "file_size": report.file_size,
        "threshold": report.threshold,
        "layers": [
            {
                "name": layer.name,
                "class": layer.class_name,
                "weights": [weight_dict(w) for w in layer.weights if w.shown],
            }
            for layer in report.layers
            if any(w.shown for w in layer.weights)
        ],
        "totals": {
            "params": totals.params,
            "near_zero": totals.near_zero,
            "sparsity": totals.sparsity,
            "prunable_params": totals.prunable_params,
            "prunable_near_zero": totals.prunable_near_zero,
            "prunable_sparsity": totals.prunable_sparsity,
        },
        "optimizer": {"tensors": report.optimizer_tensors, "params": report.optimizer_params},
        "flags": report.flags,
        "failures": report.failures,
    }


def document(report: ModelReport) -> dict[str, Any]:
    """One report as the same document `inspect --json` prints for one file."""
    return {"models": [model_dict(report)], "errors": []}


def to_json(reports: list[ModelReport], errors: list[dict[str, str]]) -> str:
    """Every model inspected, and one {path, error} per file that could not be read."""
    return schema.dumps({"models": [model_dict(r) for r in reports], "errors": errors})


CSV_COLUMNS = [
    "path",
    "layer",
    "class",
    "weight",
    "role",
    "shape",
    "dtype",
    "params",
    "zeros",
    "near_zero",
    "sparsity",
    "nan",
    "inf",
    "dead_units",
    "prunable",
]


def to_csv(reports: list[ModelReport]) -> str:
    import csv  # here, not at the top: `inspect --json` (cli/fast.py) never writes CSV
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for report in reports:
        for layer in report.layers:
            for weight in (w for w in layer.weights if w.shown):
                t, s = weight.tensor, weight.stats
                writer.writerow(
                    [
                        report.path,
                        t.layer,
                        t.layer_class or "",
                        t.name,
                        t.role,
                        "x".join(map(str, t.shape)),
                        t.dtype,
                        s.params,
                        s.zeros,
                        s.near_zero,
                        f"{s.sparsity:.6f}",
                        s.nan,
                        s.inf,
                        s.dead_units,
                        str(t.prunable).lower(),
                    ]
                )
    return buffer.getvalue()


def to_markdown(reports: list[ModelReport]) -> str:
    from sparseprune.render.tabular import code_span, markdown_row, markdown_text

    lines: list[str] = []
    for report in reports:
        totals = report.totals
        lines += [
            f"### {code_span(report.path)} ({report.format}, threshold {report.threshold:g})",
            "",
            "| layer | class | weight | shape | params | zeros | near-zero | fraction "
            "| dead units |",
            "|---|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for layer in report.layers:
            for w in (w for w in layer.weights if w.shown):
                t, s = w.tensor, w.stats
                lines.append(
                    markdown_row(
                        [
                            *(t.layer, t.layer_class or "?", t.role),
                            *("x".join(map(str, t.shape)), f"{s.params:,}", f"{s.zeros:,}"),
                            *(f"{s.near_zero:,}", f"{s.sparsity:.2%}", str(s.dead_units)),
                        ]
                    )
                )
        lines += [
            f"| **prunable total** | | | | {totals.prunable_params:,} | | "
            f"{totals.prunable_near_zero:,} | {totals.prunable_sparsity:.2%} | |",
            f"| **all weights** | | | | {totals.params:,} | | {totals.near_zero:,} | "
            f"{totals.sparsity:.2%} | |",
            "",
        ]
        lines += [f"- :x: {markdown_text(failure)}" for failure in report.failures]
        lines += [f"- :warning: {markdown_text(text)}" for text in flag_sentences(report)]
        lines.append("")
    return "\n".join(lines)


FLAG_TEXT = {
    "lambda": "Lambda layer(s) {names}: they hold code; sparseprune never runs it.",
    "custom_module": "layer(s) {names} come from modules outside Keras; they are never imported.",
    "keras_hub": "layer(s) {names} come from keras_hub (the Keras team's model library); "
    "loading them with Keras imports keras_hub.",
    "unknown_class": "layer class of {names} is not known to sparseprune; not pruned by default.",
}


def flag_sentences(report: ModelReport) -> list[str]:
    return [
        FLAG_TEXT[flag].format(names=", ".join(names))
        for flag, names in sorted(report.flags.items())
        if flag in FLAG_TEXT
    ]
