"""rnnkit's options that torch's recurrent layers lack, each in a few lines (a few seconds).

Run: python examples/options.py
"""

import torch

import rnnkit

torch.manual_seed(0)
x = torch.randn(30, 100, 4)  # (N, L, H_in): 30 series of 100 steps, 4 features

# merge_mode: how a bidirectional layer's two directions are combined, as Keras's Bidirectional.
rnn = rnnkit.RNN(4, 64, bidirectional=True, batch_first=True, merge_mode="sum")
output, h_n = rnn(x)
print("merge_mode='sum':       output", tuple(output.shape), "h_n", tuple(h_n.shape))
assert output.shape == (30, 100, 64)  # (N, L, H_out): forward + backward, not concatenated

# learn_initial_state: h_0 (and an LSTM's c_0) as trained parameters instead of zeros.
lstm = rnnkit.LSTM(4, 64, batch_first=True, learn_initial_state=True)
print("learn_initial_state:   ", [name for name, _ in lstm.named_parameters() if "initial" in name])

# weight_drop: DropConnect on W_hh, one mask per forward call in training (AWD-LSTM).
gru = rnnkit.GRU(4, 64, batch_first=True, weight_drop=0.5)
first, second = gru(x)[0], gru(x)[0]
gru.eval()
print(
    "weight_drop=0.5:        two training calls differ:",
    not torch.equal(first, second),
    "| evaluation is deterministic:",
    torch.equal(gru(x)[0], gru(x)[0]),
)

# recurrent_dropout, zoneout, layer_norm: inside every step, on every cell.
# recurrent_dropout: h_{t-1} times a mask drawn once per sequence, before W_hh (training only).
rnn = rnnkit.RNN(4, 64, batch_first=True, recurrent_dropout=0.25)
dropped = rnn(x)[0]
rnn.eval()
plain = torch.nn.RNN(4, 64, batch_first=True)
plain.load_state_dict(rnn.state_dict())  # no new parameters
print(
    "recurrent_dropout=0.25: training differs from evaluation:",
    not torch.allclose(dropped, rnn(x)[0]),
    "| evaluation is torch's layer:",
    torch.allclose(rnn(x)[0], plain(x)[0], atol=1e-6),
)
# zoneout: each unit keeps its previous value with probability p per step in training;
# evaluation takes the expectation h_t = p h_{t-1} + (1 - p) h_new.
lstm = rnnkit.LSTM(4, 64, batch_first=True, zoneout=0.1).eval()
print("zoneout=0.1:            evaluation is deterministic:", torch.equal(lstm(x)[0], lstm(x)[0]))
# layer_norm: each gate's W_hh h_{t-1} normalised, with a learned gain and bias per gate.
gru = rnnkit.GRU(4, 64, batch_first=True, layer_norm=True)
print("layer_norm=True:       ", [(n, tuple(p.shape)) for n, p in gru.named_parameters()
                                  if n.startswith("layer_norm")])  # fmt: skip

# Initialisation helpers, in place, on rnnkit's and torch's layers alike.
irnn = rnnkit.init.identity_recurrent_(rnnkit.RNN(4, 64, nonlinearity="relu"))  # IRNN
print("identity_recurrent_:    W_hh == I:", torch.equal(irnn.weight_hh_l0, torch.eye(64)))
orthogonal = rnnkit.init.orthogonal_recurrent_(rnnkit.LSTM(4, 16))
w = orthogonal.weight_hh_l0[:16]  # the input gate's block
print("orthogonal_recurrent_:  W^T W == I:", torch.allclose(w.T @ w, torch.eye(16), atol=1e-5))
lstm = rnnkit.init.forget_gate_bias_(torch.nn.LSTM(4, 16))
print(
    "forget_gate_bias_:      forget-gate biases",
    lstm.bias_ih_l0[16:32].unique().tolist(),
    lstm.bias_hh_l0[16:32].unique().tolist(),
)
