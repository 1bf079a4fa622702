import pytest
import torch
from torch import nn

from model.span.averaging import WeightAverage


def test_the_average_follows_the_weights_and_is_only_swapped_in_inside_the_block():
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # a fixed parameter is not averaged
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(5.0)
    average = WeightAverage(model, decay=0.5)
    for value in (3.0, 7.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(value)
        average.update(model)
    expected = 0.5 * (0.5 * 1.0 + 0.5 * 3.0) + 0.5 * 7.0  # 4.5
    assert average.names == ["weight"]
    with average.swapped_in(model):
        assert torch.allclose(model.weight, torch.full((1, 2), expected))
        assert float(model.bias) == 7.0
    assert torch.allclose(model.weight, torch.full((1, 2), 7.0))

    again = WeightAverage(model, decay=0.5)
    again.load_state_dict(average.state_dict())
    assert torch.allclose(again.average["weight"], average.average["weight"])
    with pytest.raises(ValueError, match="lacks"):
        again.load_state_dict({})
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)


def test_the_weights_come_back_when_the_block_raises():
    model = nn.Linear(1, 1)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
    with pytest.raises(RuntimeError), average.swapped_in(model):
        raise RuntimeError("evaluation failed")
    assert float(model.weight) == 2.0
