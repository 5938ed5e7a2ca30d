"""An ONNX Runtime session behind the interface the measuring code uses for a torch classifier.

`OrtClassifier(**inputs).logits` (torch tensors in and out), `.config`, `.eval()`, `.train(False)`,
`.to("cpu")` and `.parameters()` behave as they do for a transformers model, so latency, accuracy,
memory and energy are measured by the same harness for both runtimes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

ONNX_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 6: torch.int32, 7: torch.int64, 10: torch.float16,
               11: torch.float64, 16: torch.bfloat16}


def session_options(threads: int | None) -> Any:
    """CPU execution: `threads` intra-op threads (as torch gets), one inter-op thread, all graph optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OrtClassifier(nn.Module):
    """A sequence classifier served by ONNX Runtime (CPU execution provider).

    `parameters()` yields meta tensors with the shape and dtype of each initializer of the graph
    (no memory), so parameter counts and weight bytes describe the deployed graph: an int8 graph
    counts int8 weights plus their scales and zero points.
    """

    # Its activations live in ONNX Runtime's arena, which torch's allocator (and profiler) never sees:
    # the measuring code takes them from the process RSS instead (trainers/measuring.py).
    allocates_outside_torch = True

    def __init__(self, onnx_path: str | Path, config: Any, *, threads: int | None = None) -> None:
        super().__init__()
        import onnx
        import onnxruntime as ort

        self.onnx_path = Path(onnx_path)
        self.config = config
        self.threads = threads
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        graph = onnx.load(str(self.onnx_path), load_external_data=False).graph
        self._shapes = [(tuple(t.dims), ONNX_DTYPES.get(t.data_type, torch.float32)) for t in graph.initializer]
        self.eval()

    def parameters(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        for shape, dtype in self._shapes:
            yield torch.empty(shape, dtype=dtype, device="meta")

    def to(self, *args: Any, **kwargs: Any) -> "OrtClassifier":
        device = args[0] if args else kwargs.get("device", "cpu")
        if device is not None and not isinstance(device, torch.dtype) and torch.device(device).type != "cpu":
            raise ValueError(f"OrtClassifier runs on ONNX Runtime's CPU execution provider, not {device}")
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        arrays = {name: np.ascontiguousarray(feeds[name].detach().cpu().numpy().astype(np.int64))
                  for name in self.input_names}
        (logits,) = self.session.run(["logits"], arrays)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))
