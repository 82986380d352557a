"""The one layer table (`layers.table.LAYERS`) and its walker (`layers.slots`): rows are consistent,
and names are unique and the same in every layout. Pure Python: no Keras, no files."""

from __future__ import annotations

import pytest

from sparseprune.layers.channels import CHANNEL_FACTS
from sparseprune.layers.slots import is_prunable, legacy_slots, mac_count, slots
from sparseprune.layers.table import LAYERS, MODEL_CLASSES

LSTM = {"class_name": "LSTM", "config": {"units": 4, "use_bias": True}}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_row_is_consistent(name: str) -> None:
    row = LAYERS[name]
    found = slots(name, {"layer": LSTM})
    assert found is not None, name
    roles = [s.role for s in found]
    assert len(roles) == len(set(roles)), f"{name}: duplicate roles {roles}"
    own = {role for role, _ in row.variables}
    assert row.non_trainable <= own
    if row.unit_kernel:
        assert row.unit_kernel in own
    assert set(row.macs) <= own
    if not row.delegate:
        assert row.prunable <= set(roles), f"{name}: prunable roles it does not save"
    if row.channels is not None and row.channels.kind == "produce":
        assert row.channels.units_key and row.channels.kernel in own
        if row.channels.out_axis == -1:  # dead units are counted on the last axis
            assert row.unit_kernel == row.channels.kernel


def test_attention_names_match_keras_variable_paths() -> None:
    found = slots("MultiHeadAttention", {"use_bias": True})
    assert [s.role for s in found] == [
        f"{p}/{r}"
        for p in ("query", "key", "value", "attention_output")
        for r in ("kernel", "bias")
    ]
    assert [s.subpath for s in found][::2] == [
        ("query_dense",),
        ("key_dense",),
        ("value_dense",),
        ("output_dense",),
    ]
    assert [s.prunable for s in found] == [True, False] * 4
    assert slots("MultiHeadAttention", {"use_bias": False})[1].role == "key/kernel"


def test_bidirectional_halves_and_cells() -> None:
    found = slots("Bidirectional", {"layer": LSTM})
    assert [s.role for s in found] == [
        f"{half}/{r}"
        for half in ("forward_layer", "backward_layer")
        for r in ("kernel", "recurrent_kernel", "bias")
    ]
    assert found[0].subpath == ("forward_layer", "cell") and found[3].index == 0
    assert [s.prunable for s in found] == [True, True, False] * 2
    backward = {"class_name": "GRU", "config": {"use_bias": False}}
    mixed = slots("Bidirectional", {"layer": LSTM, "backward_layer": backward})
    assert [s.role for s in mixed][3:] == [
        "backward_layer/kernel",
        "backward_layer/recurrent_kernel",
    ]


def test_wrapped_unknown_class_is_unknown() -> None:
    assert slots("TimeDistributed", {"layer": {"class_name": "MyLayer", "config": {}}}) is None
    assert slots("TimeDistributed", {}) is None
    dense = {"class_name": "Dense", "config": {"use_bias": True}}
    assert [s.role for s in slots("TimeDistributed", {"layer": dense})] == ["kernel", "bias"]


def test_legacy_order_puts_non_trainable_last_and_drops_optional_parts() -> None:
    bn = legacy_slots("BatchNormalization", {}, 4)
    assert [s.role for s in bn] == ["gamma", "beta", "moving_mean", "moving_variance"]
    frozen = slots("BatchNormalization", {"trainable": False})
    assert not any(s.trainable for s in frozen)
    decoder = legacy_slots("TransformerDecoder", {}, 16)  # no cross attention
    assert decoder is not None and decoder[0].role == "self_attention/query/kernel"
    assert legacy_slots("TransformerDecoder", {}, 15) is None


def test_prunable_follows_tfmot_defaults() -> None:
    assert is_prunable("Dense", "kernel") and not is_prunable("Dense", "bias")
    assert not is_prunable("DepthwiseConv2D", "kernel")
    assert is_prunable("SeparableConv2D", "pointwise_kernel")
    assert not is_prunable("SeparableConv2D", "depthwise_kernel")
    assert is_prunable("Embedding", "embeddings") and is_prunable(
        "ReversibleEmbedding", "embeddings"
    )
    assert is_prunable("GRU", "recurrent_kernel")
    assert is_prunable("TransformerEncoder", "self_attention_layer/value/kernel")
    assert is_prunable("TransformerEncoder", "feedforward_output_dense/kernel")
    assert not is_prunable("TransformerEncoder", "feedforward_layer_norm/gamma")
    assert not is_prunable("BatchNormalization", "gamma")
    assert is_prunable(None, "kernel") and not is_prunable(None, "bias")


def test_one_mac_formula() -> None:
    assert mac_count("Dense", {"kernel": 12, "bias": 3}, 5) == 60
    assert mac_count("SeparableConv2D", {"depthwise_kernel": 9, "pointwise_kernel": 6}, 2) == 30
    assert mac_count("DepthwiseConv2D", {"depthwise_kernel": 9}, 4) == 36  # tf_keras name
    assert mac_count("BatchNormalization", {"gamma": 3}, 4) is None
    assert mac_count("Dense", {"bias": 3}, 4) is None


def test_shrink_facts_are_rows_of_the_one_table() -> None:
    assert set(CHANNEL_FACTS) - MODEL_CLASSES <= set(LAYERS)
    assert all(LAYERS[c].channels is CHANNEL_FACTS[c] for c in CHANNEL_FACTS if c in LAYERS)
    assert LAYERS["Dense"].channels.kind == "produce"
