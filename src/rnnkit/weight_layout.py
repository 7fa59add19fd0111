"""The parameters of a recurrent stack, named and shaped in ``torch.nn.RNNBase``'s order."""

from __future__ import annotations


def weight_layout(
    gates: int, input_size: int, hidden: int, num_layers: int, bias: bool,
    bidirectional: bool, proj_size: int,
) -> list[dict[str, tuple[int, ...]]]:  # fmt: skip
    """Per layer and direction (layer by layer, the reverse direction second), each
    parameter's name and shape: ``weight_ih``, ``weight_hh``, then with ``bias``
    ``bias_ih`` and ``bias_hh``, then with ``proj_size`` ``weight_hr``. Flattened in that
    order they are the module's ``_flat_weights``.

    Args:
        gates: gate blocks per weight: 1 (Elman), 3 (GRU) or 4 (LSTM).
        input_size, hidden, num_layers, bias, bidirectional, proj_size: the module's.

    Returns:
        One dict per layer and direction, ``{"weight_ih_l0": (G, H_in), ...}``.
    """
    width = proj_size or hidden  # H_out
    directions = 2 if bidirectional else 1
    layout = []
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else width * directions
        for direction in range(directions):
            suffix = "_reverse" if direction == 1 else ""
            shapes = {
                f"weight_ih_l{layer}{suffix}": (gates * hidden, layer_input),
                f"weight_hh_l{layer}{suffix}": (gates * hidden, width),
            }
            if bias:
                shapes[f"bias_ih_l{layer}{suffix}"] = (gates * hidden,)
                shapes[f"bias_hh_l{layer}{suffix}"] = (gates * hidden,)
            if proj_size > 0:
                shapes[f"weight_hr_l{layer}{suffix}"] = (proj_size, hidden)
            layout.append(shapes)
    return layout
