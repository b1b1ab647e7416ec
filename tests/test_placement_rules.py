"""Placement plans as llama.cpp override rules: what a user asks for is what llama.cpp gets."""

from __future__ import annotations

import pytest

from app.engine.placement import (
    PlacementPlan,
    TensorOverride,
    first_matching_device,
    tensor_overrides,
)

EXPERT_TENSORS = [f"blk.{i}.ffn_{kind}_exps.weight" for i in range(48)
                  for kind in ("up", "gate", "down")]
KEPT_ON_GPU = ["blk.3.attn_q.weight", "blk.3.ffn_gate_inp.weight", "blk.3.ffn_up_shexp.weight",
               "blk.3.ffn_norm.weight", "token_embd.weight", "output.weight"]


def devices_of(plan: PlacementPlan, names: list[str]) -> dict[str, str | None]:
    rules = tensor_overrides(plan, n_layer=48)
    return {name: first_matching_device(name, rules) for name in names}


def test_all_experts_in_ram_moves_every_routed_expert_and_nothing_else() -> None:
    placed = devices_of(PlacementPlan(experts_in_ram="all"), EXPERT_TENSORS + KEPT_ON_GPU)
    assert all(placed[name] == "CPU" for name in EXPERT_TENSORS)
    assert all(placed[name] is None for name in KEPT_ON_GPU)


@pytest.mark.parametrize("first_n", [1, 10, 24, 47])
def test_first_n_layers_experts_in_ram(first_n: int) -> None:
    placed = devices_of(PlacementPlan(experts_in_ram=first_n), EXPERT_TENSORS)
    in_ram = {int(name.split(".")[1]) for name, dev in placed.items() if dev == "CPU"}
    assert in_ram == set(range(first_n))


def test_no_experts_in_ram_gives_no_rules() -> None:
    assert tensor_overrides(PlacementPlan(experts_in_ram="none"), n_layer=48) == []
    assert tensor_overrides(PlacementPlan(experts_in_ram=0), n_layer=48) == []


def test_explicit_rules_come_first_and_win() -> None:
    plan = PlacementPlan(experts_in_ram="all",
                         overrides=[TensorOverride(r"blk\.47\.ffn_.*_exps", "CUDA0")])
    placed = devices_of(plan, EXPERT_TENSORS)
    assert placed["blk.47.ffn_up_exps.weight"] == "CUDA0"
    assert placed["blk.46.ffn_up_exps.weight"] == "CPU"


def test_layer_numbers_do_not_match_by_prefix() -> None:
    # experts of layer 1 in RAM must not drag layers 10-19 along
    placed = devices_of(PlacementPlan(experts_in_ram=2), EXPERT_TENSORS)
    assert placed["blk.1.ffn_down_exps.weight"] == "CPU"
    assert placed["blk.10.ffn_down_exps.weight"] is None
    assert placed["blk.12.ffn_down_exps.weight"] is None


def test_bad_regex_and_negative_count_are_refused() -> None:
    with pytest.raises(Exception, match="unterminated|missing"):
        tensor_overrides(PlacementPlan(overrides=[TensorOverride("blk.(1", "CPU")]), n_layer=4)
    with pytest.raises(ValueError, match="layer count"):
        tensor_overrides(PlacementPlan(experts_in_ram=-3), n_layer=4)


def test_the_placement_sentence_names_what_differs_from_llama_cpps_defaults() -> None:
    streaming = PlacementPlan(n_gpu_layers=0, n_threads=8, repack=False)
    assert streaming.describe() == ("context 4,096, GPU layers 0, routed experts in RAM: none, "
                                    "threads 8, weights not repacked")
    split = PlacementPlan(experts_in_ram=12, tensor_split=[3, 1],
                          overrides=[TensorOverride(r"blk\.3\.", "CPU")])
    assert split.describe() == ("context 4,096, GPU layers all, routed experts in RAM: first 12 "
                                "layers, threads auto, tensor split 3 : 1\n  rule blk\\.3\\. = CPU")


def test_no_host_reaches_llama_cpp_only_with_repacking_on() -> None:
    import llama_cpp

    from app.engine.llama_params import model_params

    progress = llama_cpp.llama_progress_callback(lambda _f, _u: True)
    for plan, expected in ((PlacementPlan(no_host=True), True),
                           (PlacementPlan(no_host=True, repack=False), False),
                           (PlacementPlan(), False)):
        assert model_params(plan, 4, "qwen3moe", progress).params.no_host is expected
    assert "CPU weights repacked for the CPU (no_host)" in PlacementPlan(no_host=True).describe()
