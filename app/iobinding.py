"""`session.run` through ONNX Runtime's I/O binding, with device buffers kept per batch size (CUDA).

UNTESTED ON GPU HARDWARE: written to ONNX Runtime's documented Python API (`OrtValue`,
`SessionIOBinding`, the `gpu_graph_id` run option) on a machine without a GPU; the CPU path never
comes here. Enabled by IO_BINDING=true (and CUDA_GRAPHS=true) only when the session runs on CUDA.

Why: plain `session.run` allocates the input on the device, copies it, allocates the outputs and
copies them back, every call. The batcher forms at most `max_batch` sizes, so one input and one
set of output buffers per size can live on the device for the life of the session: a run is then
one host→device copy, the kernels, and one device→host copy per output. With CUDA graphs, each
batch size's kernel launches are captured once (its first run, at the warm-up) and replayed,
which needs exactly this: the same shapes at the same device addresses every time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from contract.card import ModelCard

logger = logging.getLogger(__name__)

_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int64": np.int64}


@dataclass
class _Bound:
    input: ort.OrtValue
    outputs: list[ort.OrtValue]
    binding: ort.IOBinding
    run_options: ort.RunOptions | None


class BoundRunner:
    """Runs (N, H, W, 3) uint8 batches, N ≤ `max_batch`, through device buffers made per N."""

    def __init__(
        self,
        session: ort.InferenceSession,
        card: ModelCard,
        device_id: int,
        max_batch: int,
        cuda_graphs: bool,
    ) -> None:
        self.session = session
        self.card = card
        self.device_id = device_id
        self.max_batch = max_batch
        self.cuda_graphs = cuda_graphs
        self._bound: dict[int, _Bound] = {}
        for spec in card.outputs:
            if spec.dtype not in _DTYPES or any(d < 0 for d in spec.shape[1:]):
                raise ValueError(f"output {spec.name} ({spec.dtype} {spec.shape}) cannot be pre-allocated")

    def _buffers(self, rows: int) -> _Bound:
        bound = self._bound.get(rows)
        if bound is not None:
            return bound
        card = self.card
        shape = (rows, card.input.height, card.input.width, 3)
        x = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.uint8, "cuda", self.device_id)
        outputs = [
            ort.OrtValue.ortvalue_from_shape_and_type(
                [rows, *spec.shape[1:]], _DTYPES[spec.dtype], "cuda", self.device_id
            )
            for spec in card.outputs
        ]
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(card.input.name, x)
        for spec, value in zip(card.outputs, outputs, strict=True):
            binding.bind_ortvalue_output(spec.name, value)
        run_options = None
        if self.cuda_graphs:  # one captured graph per batch size; ids start at 1 (0 is the default)
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(rows))
        bound = self._bound[rows] = _Bound(x, outputs, binding, run_options)
        return bound

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        rows = int(batch.shape[0])
        if rows > self.max_batch:
            raise ValueError(f"batch of {rows} rows; buffers exist up to {self.max_batch}")
        bound = self._buffers(rows)
        bound.input.update_inplace(np.ascontiguousarray(batch))  # host → device, same address
        bound.binding.synchronize_inputs()
        self.session.run_with_iobinding(bound.binding, bound.run_options)
        bound.binding.synchronize_outputs()
        return [value.numpy() for value in bound.outputs]


def bound_runner(
    session: ort.InferenceSession,
    card: ModelCard,
    device_id: int,
    max_batch: int,
    io_binding: bool,
    cuda_graphs: bool,
) -> BoundRunner | None:
    """A `BoundRunner` when IO_BINDING is on and the session really runs on a GPU, else None."""
    if not io_binding:
        return None
    provider = session.get_providers()[0]
    if provider not in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        logger.info("IO_BINDING ignored for %s: its session runs on %s", card.name, provider)
        return None
    return BoundRunner(session, card, device_id, max_batch, cuda_graphs)
