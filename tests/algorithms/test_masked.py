"""Masked reductions over padded sequences."""

import pytest
import torch

from r1kit.algorithms.masked import masked_mean, masked_sum, masked_var

pytestmark = pytest.mark.numerics


def test_masked_mean_and_sum_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 100.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # all: (1 + 2 + 4) / 3 = 2.333333; per row: (1 + 2) / 2 = 1.5 and 4 / 1 = 4
    assert masked_sum(x, mask).item() == 7.0
    assert masked_mean(x, mask).item() == pytest.approx(7.0 / 3.0)
    assert masked_mean(x, mask.float(), dim=-1).tolist() == [1.5, 4.0]


def test_masked_mean_of_an_all_padding_row_is_zero_not_nan():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert masked_mean(x, mask, dim=-1).tolist() == [1.5, 0.0]


def test_masked_var_unbiased_and_population():
    # [1, 3, 5] (9 is padding): mean 3, squared deviations 4 + 0 + 4 = 8
    # unbiased: 8 / 2 = 4; population: 8 / 3 = 2.666667
    x = torch.tensor([1.0, 3.0, 5.0, 9.0])
    mask = torch.tensor([1, 1, 1, 0])
    assert masked_var(x, mask).item() == pytest.approx(4.0)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(8.0 / 3.0)
    # a single real value: variance 0, not NaN
    assert masked_var(x, torch.tensor([1, 0, 0, 0])).item() == 0.0
