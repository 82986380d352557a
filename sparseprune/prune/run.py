"""`prune_model`: plan -> (global selection) -> write with masks applied -> re-read and verify.

Every figure in the result is measured by reading the written file back (checks.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseprune.choices import BLOCK_METHODS, UNIT_METHODS, Structure, TensorMethod, TrainMethod
from sparseprune.errors import InputError
from sparseprune.formats import ModelFile, TensorInfo, open_model
from sparseprune.formats.atomic import atomic_path, check_output_path
from sparseprune.formats.convert import check_convertible, convert_model
from sparseprune.formats.model import FORMAT_H5, FORMAT_H5_WEIGHTS, FORMAT_KERAS, FORMAT_WEIGHTS_H5
from sparseprune.formats.writer import write_model
from sparseprune.numeric.masks import (
    GlobalCut,
    apply_global_cut,
    global_cut,
    n_of_m,
    prune_count,
    zero_below,
    zero_by_mask,
    zero_smallest,
)
from sparseprune.numeric.schedule import TrainSpec
from sparseprune.prune import blocks, streamed, structured
from sparseprune.prune.checks import measure_and_verify
from sparseprune.prune.finetune import run_training
from sparseprune.prune.plan import Plan, TensorPlan, make_plan
from sparseprune.prune.result import PruneResult, TensorOutcome
from sparseprune.prune.spec import PruneSpec

SUFFIX_FORMATS = {
    ".keras": (FORMAT_KERAS,),
    ".weights.h5": (FORMAT_WEIGHTS_H5,),
    ".h5": (FORMAT_H5, FORMAT_H5_WEIGHTS),
    ".hdf5": (FORMAT_H5, FORMAT_H5_WEIGHTS),
}


def default_output(path: Path) -> Path:
    """`model.keras` -> `model.pruned.keras`; `m.weights.h5` -> `m.pruned.weights.h5`."""
    suffix = _suffix(path)
    return path.with_name(f"{path.name[: len(path.name) - len(suffix)]}.pruned{suffix}")


def output_suffix(path: str, label: str) -> str:
    """The suffix that keeps a model's format when its output has no name of its own (stdout)."""
    with open_model(path, label) as model:
        return {FORMAT_KERAS: ".keras", FORMAT_WEIGHTS_H5: ".weights.h5"}.get(model.format, ".h5")


def prune_model(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    spec: PruneSpec,
    *,
    force: bool = False,
    method: TrainMethod | str = TrainMethod.MASK,
    train: TrainSpec | None = None,
    verify: bool = False,
    data: str | os.PathLike[str] | None = None,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    label: str | None = None,
    out_label: str | None = None,
    on_tensor: Callable[[TensorInfo], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> PruneResult:
    """Prune `source` into `output` (written atomically). Raises InputError on bad input.

    One-shot on the file by default. With `train` (or `method="tfmot"`) the weights come from a
    training-aware prune in Keras and are written back into the input's layout the same way.
    `verify` compares input and output predictions with Keras (inputs from `data`, else
    random); a file Keras could only load by running its code is refused before writing
    unless `unsafe`. `custom_objects` is a Python file run first (only with `unsafe`: it is
    code) so that the custom layers it registers load in Keras for training or verification.
    Failed checks are listed in `result.failures` (the CLI exits 1).
    `label`/`out_label` name the files in messages; `on_tensor`/`on_epoch` report progress.
    """
    if not isinstance(spec, PruneSpec):
        raise InputError(f"prune_model needs a PruneSpec, got {type(spec).__name__}.")
    spec.validate()
    source, target = Path(source), Path(output)
    method = TrainMethod.parse(method, "method")
    check_output_path(target, force, (source,))
    if custom_objects is not None:
        from sparseprune.keras_ops.loading import import_custom_objects

        import_custom_objects(os.fspath(custom_objects), unsafe)
    loads_keras = verify or train is not None or method is not TrainMethod.MASK
    if loads_keras:  # refuse code in the file before any work, without importing Keras
        from sparseprune.keras_ops.loading import check_loadable

        check_loadable(str(source), unsafe)
    if verify and data is not None:
        from sparseprune.keras_ops.verify import verification_data

        verification_data(Path(data))
    job = _Job(source, spec, label, out_label, on_tensor, method, train, unsafe, on_epoch)
    if spec.structure is Structure.UNITS:
        result = _prune_units(job, target, force)
    else:
        result = _prune_to(job, target, force)
    if verify:
        from sparseprune.keras_ops.verify import verify_outputs

        result.verification = verify_outputs(
            str(source), str(target), None if data is None else Path(data), unsafe
        )
    return result


@dataclass(frozen=True)
class _Job:
    """`prune_model`'s request, passed whole to the steps that write a file."""

    source: Path
    spec: PruneSpec
    label: str | None
    out_label: str | None
    on_tensor: Callable[[TensorInfo], None] | None
    method: TrainMethod
    train: TrainSpec | None
    unsafe: bool
    on_epoch: Callable[[dict], None] | None


def _prune_units(job: _Job, target: Path, force: bool) -> PruneResult:
    """Zero whole units into a scratch file (checked like any prune), then shrink into `target`.

    Checked before any work, so a long fine-tune never ends in a file shrink cannot write.
    """
    with open_model(job.source, job.label) as model:
        structured.check_request(model, target, job.method)
    with tempfile.TemporaryDirectory(prefix="sparseprune-units-") as scratch:
        zeroed = Path(scratch) / f"zeroed{_suffix(target)}"
        result = _prune_to(job, zeroed, force=True)
        shrunk = structured.shrink_into(zeroed, target, force, str(job.label or job.source))
    result.output = str(job.out_label or target)
    result.output_size = shrunk.output_size
    result.bound_bytes = structured.bound_bytes(target)
    result.shrink = structured.shrink_summary(shrunk)
    result.failures += [f"shrink: {failure}" for failure in shrunk.failures]
    return result


def _prune_to(job: _Job, target: Path, force: bool) -> PruneResult:
    """Plan, (train,) write `target` atomically, re-read and check it."""
    source, spec, label, method, train = job.source, job.spec, job.label, job.method, job.train
    with open_model(source, label) as model:
        target_format = _target_format(model, target)
        plan = make_plan(model, spec)
        outcomes = {p.tensor.path: _outcome(p) for p in plan.tensors}
        training = None
        if train is not None or method is not TrainMethod.MASK:
            units = (
                structured.training_units(model, plan)
                if method is TrainMethod.MASK
                else structured.TrainingUnits()
            )
            training = run_training(
                str(source), plan, method, train, job.unsafe, job.on_epoch, units
            )
            transform = _trained_transform(plan, outcomes, training.weights, units)
        else:
            pool = structured.unit_pool(model, plan)
            block_pool = _block_pool(model, plan)
            selection = _global_selection(model, plan)
            transform = streamed.StreamingTransform(
                _transform(plan, outcomes, selection, pool, block_pool),
                streamed.Streamer(spec.threshold, selection, plan.pool_index()),
                {p.tensor.path: p for p in plan.tensors},
                outcomes,
            )
        with atomic_path(target, force=force, inputs=(source,)) as temp:
            if target_format == model.format:
                write_model(model, temp, transform, not spec.keep_optimizer, job.on_tensor)
            else:
                convert_model(model, temp, target_format, transform, job.on_tensor)
        result = PruneResult(
            str(label or source), str(job.out_label or target), model.format, model.size
        )
        result.optimizer = _optimizer_state(model, spec)
        result.tensors = list(outcomes.values())
        result.training = training.summary() if training is not None else None
        measure_and_verify(model, target, plan, result, trained=training is not None)
    return result


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in SUFFIX_FORMATS if name.endswith(s)), path.suffix)


def _target_format(model: ModelFile, target: Path) -> str:
    """The output format the suffix asks for; conversions are checked before any work."""
    suffix = _suffix(target)
    allowed = SUFFIX_FORMATS.get(suffix)
    if allowed is None:
        raise InputError(f"output {target} must end in .keras, .h5 or .weights.h5.")
    if model.format in allowed:
        return model.format
    if allowed[0] in (FORMAT_KERAS, FORMAT_H5):
        check_convertible(model, allowed[0])
        return allowed[0]
    raise InputError(
        f"{model.path} is a '{model.format}' file and cannot be written as '{suffix}'; "
        "give -o the input's suffix."
    )


def _outcome(plan: TensorPlan) -> TensorOutcome:
    return TensorOutcome(plan.tensor, plan.method, plan.target, 0, skip_reason=plan.skip_reason)


def _prepared(plan: Plan, values: np.ndarray) -> np.ndarray:
    """A tensor after the threshold step, which always comes first."""
    if plan.spec.threshold is not None:
        zero_below(values, plan.spec.threshold)
    return values


def _global_selection(model: ModelFile, plan: Plan) -> GlobalCut | None:
    pooled = plan.pooled
    if not pooled:
        return None
    return global_cut(
        lambda i: (
            _prepared(plan, block.astype(np.float32, copy=False))
            for block in streamed.blocks_of(model, pooled[i].tensor)
        ),
        [p.tensor.params for p in pooled],
        plan.global_prune_count(),
        plan.global_caps(),
    )


def _block_pool(model: ModelFile, plan: Plan) -> blocks.BlockPool | None:
    pooled = plan.block_pooled
    if not pooled:
        return None
    tensors = [p.tensor for p in pooled]
    return blocks.BlockPool(
        model, tensors, plan.spec, plan.global_block_count(), plan.global_block_caps()
    )


def _transform(
    plan: Plan,
    outcomes: dict[str, TensorOutcome],
    selection: GlobalCut | None,
    pool: structured.UnitPool | None = None,
    block_pool: blocks.BlockPool | None = None,
):
    by_path = {p.tensor.path: p for p in plan.tensors}
    pool_index = plan.pool_index()

    def transform(tensor: TensorInfo, values: np.ndarray) -> np.ndarray | None:
        item, outcome = by_path[tensor.path], outcomes[tensor.path]
        outcome.zeros_before = int(np.count_nonzero(values == 0))
        if item.method is None:
            return None
        values = _prepared(plan, np.array(values, copy=True))
        prepared_zeros = int(np.count_nonzero(values == 0))
        if item.method is TensorMethod.TARGET:
            count = prune_count(values.size, item.target or 0.0)
            zero_smallest(values, count)
            outcome.expected_zeros = max(count, prepared_zeros)
        elif item.method is TensorMethod.GLOBAL and selection is not None:
            apply_global_cut(values, pool_index[tensor.path], selection)
        elif item.method is TensorMethod.PATTERN and plan.spec.pattern is not None:
            zeros, group = plan.spec.pattern
            n_of_m(values, zeros, group, axis=-2)
        elif item.method is TensorMethod.MASK and item.mask is not None:
            zero_by_mask(values, item.mask)
        elif item.method is TensorMethod.THRESHOLD:
            outcome.expected_zeros = prepared_zeros
        elif item.method in UNIT_METHODS:
            outcome.units_pruned = structured.apply_units(item, values, pool)
        elif item.method in BLOCK_METHODS:
            outcome.blocks_pruned = blocks.apply_blocks(
                item.method, tensor.path, values, item.target, plan.spec, block_pool
            )
        return values

    return transform


def _trained_transform(
    plan: Plan,
    outcomes: dict[str, TensorOutcome],
    weights: dict,
    units: structured.TrainingUnits,
):
    """Every weight takes its trained value; pruned tensors must hold their final zero counts."""
    by_path = {p.tensor.path: p for p in plan.tensors}

    def transform(tensor: TensorInfo, values: np.ndarray) -> np.ndarray:
        item, outcome = by_path[tensor.path], outcomes[tensor.path]
        outcome.zeros_before = int(np.count_nonzero(values == 0))
        trained = np.asarray(weights[tensor.name])
        if trained.shape != values.shape:
            raise InputError(
                f"training returned {tensor.name} with shape {trained.shape}, "
                f"the file has {values.shape}."
            )
        if item.method is TensorMethod.TARGET and item.target is not None:
            outcome.expected_zeros = prune_count(values.size, item.target)
        if item.method in UNIT_METHODS:
            outcome.units_pruned = structured.trained_unit_count(item, units)
        if item.method is TensorMethod.BLOCKS and item.target is not None:
            outcome.blocks_pruned = prune_count(plan.blocks_of(item), item.target)
        trained = trained.astype(values.dtype, copy=True)
        trained[trained == 0] = (
            0  # masks applied by multiplication leave -0.0, which compresses worse
        )
        return trained

    return transform


def _optimizer_state(model: ModelFile, spec: PruneSpec) -> str:
    if not model.optimizer_tensors:
        return "none"
    return "kept" if spec.keep_optimizer else "reset"
