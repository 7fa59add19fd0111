"""rnnkit: recurrent neural networks, exact where they copy PyTorch and faster.

``rnnkit.RNN`` and ``rnnkit.RNNCell`` are drop-in replacements for
``torch.nn.RNN`` and ``torch.nn.RNNCell`` that run on rnnkit's fused engine
(:mod:`rnnkit.engine`); :mod:`rnnkit.functional` holds the readable reference
loop that documents the math.
"""

from rnnkit import functional
from rnnkit.cell import RNNCell
from rnnkit.rnn import RNN

__all__ = ["RNN", "RNNCell", "functional"]
__version__ = "0.1.0"
