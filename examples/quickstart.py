"""Quick start: the reference example's shapes, and rnnkit.RNN against torch.nn.RNN.

Forecasting the next close from 100 days of Open/High/Low/Close, batch 30:
input (30, 100, 4) -> RNN -> h_n (1, 30, 64) -> linear head -> (30, 1).
Runs in a few seconds on a CPU; the data here is a synthetic random walk
(the real GOOG prices arrive with the toolkit).
"""

import time

import torch
from torch import nn

import rnnkit

torch.manual_seed(0)
batch, days, features, hidden = 30, 100, 4, 64

encoder = rnnkit.RNN(features, hidden, batch_first=True)
head = nn.Linear(hidden, 1)
x = torch.randn(batch, days, features).cumsum(1)  # (batch, days, open/high/low/close)
output, h_n = encoder(x)
print(f"input  {tuple(x.shape)}  (N, L, H_in) with batch_first=True")
print(f"output {tuple(output.shape)}  (N, L, D*H_out): one state per day, for many-to-many heads")
print(f"h_n    {tuple(h_n.shape)}  (D*num_layers, N, H_out): last state, for many-to-one heads")
print(f"head(h_n[-1]) {tuple(head(h_n[-1]).shape)}  (N, 1): the next close")

# Exact drop-in: torch.nn.RNN holding the same weights gives the same answer.
reference = nn.RNN(features, hidden, batch_first=True)
reference.load_state_dict(encoder.state_dict())
expected, expected_h_n = reference(x)
print(f"max |rnnkit - torch.nn.RNN| = {(output - expected).abs().max().item():.2e}")

# A few training steps: predict the last day's close from the 99 before it.
inputs, target = x[:, :-1], x[:, -1, 3:]
scale = inputs.abs().amax()
optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-2)
start = time.perf_counter()
for step in range(1, 31):
    _, h_n = encoder(inputs / scale)  # h_n: (1, N, H_out)
    loss = nn.functional.mse_loss(head(h_n[-1]), target / scale)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 10 == 0:
        print(f"step {step:2d}  mse {loss.item():.5f}")
print(f"30 training steps in {time.perf_counter() - start:.2f} s")
