"""sparseprune.keras on the TensorFlow, JAX and PyTorch backends, one subprocess per backend.

`fixtures/keras_api_check.py` trains small models and reports facts, with expectations computed
there by plain numpy (stable sorts of |w|), not by sparseprune's mask code. The README example
("prune, fine-tune, strip, save") is extracted from README.md and run on every backend; the
stripped file is loaded in a process where sparseprune cannot be imported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tests" / "fixtures" / "keras_api_check.py"
BACKENDS = ("tensorflow", "jax", "torch")
# The three backends run side by side on a shared machine: one thread each (PyTorch's default
# two intra-op threads spin against each other under load, 6x slower here).
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
}


def readme_example(tmp_path: Path) -> Path:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- keras-api-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its sparseprune.keras example"
    path = tmp_path / "example.py"
    path.write_text(block.group(1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, needs_tensorflow) -> dict:
    """All three backends start at once (each is mostly single-threaded Python work)."""
    started = {}
    for backend in BACKENDS:
        scratch = tmp_path_factory.mktemp(backend)
        with open(scratch / "out.txt", "w") as out, open(scratch / "err.txt", "w") as err:
            process = subprocess.Popen(
                [sys.executable, str(CHECK), str(scratch), str(readme_example(scratch))],
                env={**ENV, "KERAS_BACKEND": backend},
                stdout=out,
                stderr=err,
            )
        started[backend] = (process, scratch)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module", params=BACKENDS)
def facts(request, runs) -> dict:
    process, scratch = runs[request.param]
    process.wait(timeout=1200)
    stderr = (scratch / "err.txt").read_text(errors="replace")
    assert process.returncode == 0, stderr[-3000:]
    out = json.loads((scratch / "out.txt").read_text().strip().splitlines()[-1])
    out["scratch"] = str(scratch)
    return out


def test_backend_is_the_one_asked_for(facts: dict) -> None:
    assert facts["backend"] in BACKENDS


def test_keep_k_ties_and_masked_forward(facts: dict) -> None:
    assert facts["keep_k_exact"] and facts["forward_masked"]


def test_wrapped_layers_keep_what_their_call_adds(facts: dict) -> None:
    (loss,), expected = facts["activity_loss"]  # L2(0.5) of the output / batch, from numpy
    assert abs(loss - expected) <= 1e-4 * max(1.0, expected)
    assert facts["embedding_mask_passed"]  # masked steps skipped by the LSTM


def test_schedule_steps_frequency_begin_end(facts: dict) -> None:
    assert facts["schedule_zeros"] == facts["schedule_expected"]
    assert facts["schedule_zeros"][:2] == [0, 0]  # nothing before begin_step


def test_block_and_m_by_n(facts: dict) -> None:
    assert facts["block_exact"] and facts["m_by_n_exact"]
    # TFMOT refuses anything but two ints for both
    block, m_by_n = facts["bad_pairs_refused"]
    assert "block_size must be two integers" in block
    assert "sparsity_m_by_n must be two integers" in m_by_n


def test_global_scope_with_cap_and_fixed_mask(facts: dict) -> None:
    assert facts["global_exact"]
    assert facts["global_head_zero_fraction"] <= 0.3
    assert facts["fixed_mask_kept"]
    assert "rule needs pool=NAME" in facts["global_rule_without_pool"]


def test_functional_subclassed_and_compiled_modes(facts: dict) -> None:
    modes = facts["modes"]
    assert {"functional", "subclassed"} <= set(modes)
    if facts["backend"] != "torch":
        assert {"jit_compile", "steps_per_execution"} <= set(modes)
    for mode in modes.values():
        assert mode["sparsity"] and all(s == 0.75 for s in mode["sparsity"].values())
        assert all(step == 24 for step in mode["steps"])  # 3 epochs x 8 batches


def test_checkpoint_resumes_with_the_same_masks(facts: dict) -> None:
    assert facts["resume_same_masks"] and facts["resume_step"] == 8
    assert facts["resume_masks_only_grow"]
    assert all(abs(s - 0.8) < 0.01 for s in facts["resume_sparsity"].values())
    assert facts["stripped_classes"] == ["Dense", "Dense"]
    assert facts["stripped_zeros"] == list(facts["resume_sparsity"].values())


def test_stripped_file_loads_without_sparseprune(facts: dict) -> None:
    (loaded,) = facts["loaded_without_sparseprune"]  # the check started it, cwd /, no PYTHONPATH
    assert loaded["returncode"] == 0, loaded["stderr"]
    assert loaded["stdout"].strip() == "['Dense']"


def test_custom_loops_keep_pruned_weights_at_zero(facts: dict) -> None:
    fractions = facts["custom_loop_zero_fractions"]
    assert len(fractions) == 2 and all(abs(f - 0.6) < 0.01 for f in fractions)


def test_readme_example(facts: dict) -> None:
    readme = facts["readme"]
    assert readme["classes"] == ["Dense"]
    assert all(abs(z - 0.8) < 0.001 for z in readme["kernel_zeros"])
    assert readme["pruned_accuracy"] >= readme["dense_accuracy"] - 0.03
