"""`EnsembleModel`: several many-to-one models of one architecture, averaged.

On a few dozen sequences one network's test score swings by several points
with its seed and with which sequences early stopping held out; the average
of ``ensemble_size`` members, each trained with its own seed and its own
validation part, swings far less (``docs/defaults_cv.md`` measures it).
Classifiers average probabilities, regressors predictions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EnsembleModel"]


class EnsembleModel(nn.Module):
    """The mean of ``config.ensemble_size`` many-to-one models.

    Args:
        config: A :class:`~rnnkit.toolkit.models.ModelConfig` of a regression or
            classification model with ``ensemble_size`` > 1.
        members: Trained members to hold (their configs must be `config` with
            ``ensemble_size=1``); None builds freshly initialised ones.

    Shape:
        Input as :class:`~rnnkit.toolkit.models.ManyToOneModel`'s; returns
        ``(batch, num_outputs)``: for classification the log of the mean class
        probability (so softmax and argmax read it as logits), for regression
        the mean prediction.

    Example:
        >>> from rnnkit.toolkit.models import ModelConfig, build_model
        >>> config = ModelConfig(task="classification", input_size=3, num_outputs=2,
        ...                      ensemble_size=5)
        >>> build_model(config)(torch.randn(4, 10, 3)).shape  # (batch, classes)
        torch.Size([4, 2])
    """

    def __init__(self, config: Any, members: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        from rnnkit.toolkit.models import MODELS  # models builds ensembles: no import circle

        member_config = dataclasses.replace(config, ensemble_size=1)
        if members is None:
            members = [MODELS[config.task](member_config) for _ in range(config.ensemble_size)]
        if len(members) != config.ensemble_size or any(m.config != member_config for m in members):
            raise ValueError(
                f"Received an invalid value for argument `members`, expected "
                f"{config.ensemble_size} models of config {member_config}, got "
                f"{[getattr(m, 'config', type(m).__name__) for m in members]}"
            )
        self.config = config
        self.members = nn.ModuleList(members)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        outputs = torch.stack([member(*args, **kwargs) for member in self.members])
        # outputs: (members, batch, num_outputs)
        if self.config.task == "classification":
            log_probs = torch.log_softmax(outputs, dim=-1)
            return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
        return outputs.mean(dim=0)
