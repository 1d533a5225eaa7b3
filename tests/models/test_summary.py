"""summary(): rows, totals, MACs by hand, no side effects; the seeds' Inception table."""
import torch
from torch import nn

from normlab.models import create_model, summary
from normlab.models.summary import SEED_INCEPTION_TABLE, inception_sides, inception_table, millions


def test_lenet_rows_params_and_macs_by_hand():
    s = summary(create_model("lenet"), 28)
    conv1 = s.rows[0]
    assert (conv1.name, conv1.type, conv1.output_shape) == ("0", "Conv2d", (1, 6, 28, 28))
    assert conv1.params == 6 * 1 * 5 * 5 + 6
    assert conv1.macs == 6 * 28 * 28 * (1 * 5 * 5)
    assert s.total_params == 61_706
    # 2 convs + 3 linears: 6·28²·25 + 16·10²·150 + 400·120 + 120·84 + 84·10
    assert s.total_macs == 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert s.output_shape == (1, 10)


def test_batch_scales_macs_and_nested_rows_add_up():
    net = create_model("googlenet")
    one, two = summary(net, (1, 1, 96, 96)), summary(net, (2, 1, 96, 96))
    assert two.total_macs == 2 * one.total_macs
    stage3 = next(r for r in one.rows if r.name == "2")
    inside = [r for r in one.rows if r.name.startswith("2.") and r.depth == 2]
    assert stage3.macs == sum(r.macs for r in inside)
    assert stage3.params == sum(r.params for r in inside)
    assert sum(r.macs for r in one.rows if r.depth == 1) == one.total_macs


def test_summary_changes_nothing():
    net = create_model("lenet_bn").train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    summary(net, 28)
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_table_lists_every_module_and_the_totals():
    text = summary(create_model("resnet20"), 28).table()
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "params", "MACs"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[-2] == f"{sum(p.numel() for p in create_model('resnet20').parameters()):,}"
    assert "    1.0.branch.0" in text          # depth 3, indented


def test_mlp_summary_from_a_feature_shape():
    s = summary(create_model("mlp", in_features=2, hidden=(4,), num_classes=1, norm="batch"), (1, 2))
    assert [r.type for r in s.rows] == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert s.total_params == 25 and s.total_macs == 8 + 4


def test_inception_table_matches_the_seed_at_28():
    rows = inception_table(28)
    assert [(n, p, m) for n, p, m, _, _ in rows] == [
        ("Inception", 163_696, 128_049_152),      # (weights without biases) × 28²
        ("3×3 Conv", 442_624, 346_816_512),       # 192·256·9 · 784
        ("5×5 Conv", 1_229_056, 963_379_200)]     # 192·256·25 · 784
    assert {n: (p, m) for n, _, _, p, m in rows} == SEED_INCEPTION_TABLE


def test_the_seeds_numbers_hold_at_28_only():
    assert inception_sides() == [28]


def test_millions_truncate_like_the_seed():
    assert millions(1_229_056, 2) == "1.22M"     # rounding would say 1.23M
    assert millions(346_816_512, 0) == "346M"    # rounding would say 347M


def test_summary_of_a_plain_module():
    s = summary(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10))
    assert s.rows == [] and s.total_macs == 8 * 100 * 27 and s.total_params == 8 * 27 + 8


def test_to_dict_is_json_and_round_trips_the_numbers():
    import json
    s = summary(create_model("lenet_bn"), 28)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["total_params"] == 44_878 and d["total_macs"] == s.total_macs
    assert d["rows"][1] == {"name": "1", "type": "BatchNorm2d", "params": 12, "macs": 0,
                            "output_shape": [1, 6, 24, 24]}
