"""A tiny streaming video model (torch → ONNX) with the manifest format the backend expects."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from mvcompile.artifact.export_manifest import ExportedState, ExportManifest, MemoryEstimate, WeightsSource
from mvcompile.artifact.manifest import SpecSource, Tensor

FRAMES, SIZE, CLASSES, CHANNELS = 2, 8, 5, 4


class TinyStream(nn.Module):
    """Causal conv3d fed by a 2-frame buffer state, plus a running-sum state, then logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, CHANNELS, kernel_size=3, padding=(0, 1, 1))
        self.fc = nn.Linear(CHANNELS, CLASSES)

    def forward(self, image: torch.Tensor, buf: torch.Tensor, total: torch.Tensor):
        x = torch.cat([buf, image.permute(0, 4, 1, 2, 3)], dim=2)
        y = torch.relu(self.conv(x))
        new_total = total + y.mean(dim=(3, 4)).sum(dim=2)
        return self.fc(new_total), x[:, :, -2:], new_total


@dataclass
class Exported:
    onnx_model: onnx.ModelProto
    manifest: ExportManifest
    torch_model: TinyStream


def state_shapes(batch: int) -> dict[str, list[int]]:
    return {"buf": [batch, 3, 2, SIZE, SIZE], "total": [batch, CHANNELS]}


def export_tiny(batch: int = 1) -> Exported:
    """Export TinyStream (seeded weights) to ONNX opset 17 with its manifest."""
    torch.manual_seed(0)
    model = TinyStream().eval()
    shapes = state_shapes(batch)
    image = [batch, FRAMES, SIZE, SIZE, 3]
    args = (torch.rand(image), torch.zeros(shapes["buf"]), torch.zeros(shapes["total"]))
    names_in, names_out = ["image", "buf", "total"], ["logits", "buf_out", "total_out"]
    stream = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, args, stream, input_names=names_in, output_names=names_out,
                          dynamo=False, opset_version=17)
    states = [ExportedState(name=n, input=n, output=f"{n}_out", shape=s, dtype="float32",
                            layout="NCTHW" if len(s) == 5 else "NC") for n, s in shapes.items()]
    values = [p.detach().numpy() for p in model.parameters()]
    manifest = ExportManifest(
        spec=SpecSource(name="tiny_stream", path=__file__, sha256=hashlib.sha256(Path(__file__).read_bytes()).hexdigest()),
        variant="base", mode="stream", batch=batch, frames=FRAMES, resolution=SIZE, frame_rate=None,
        num_classes=CLASSES, options=None, opset=17,
        weights=WeightsSource(source="seed:0", sha256=hashlib.sha256(b"".join(v.tobytes() for v in values)).hexdigest()),
        inputs=[Tensor(name="image", shape=image, dtype="float32")],
        outputs=[Tensor(name="logits", shape=[batch, CLASSES], dtype="float32")],
        states=states,
        memory=MemoryEstimate(inputs=0, new_states=0, weights=sum(v.nbytes for v in values), activations=0,
                              workspace=0, peak=1 << 20),
    )
    return Exported(onnx.load_from_string(stream.getvalue()), manifest, model)


def onnxruntime_stream(model: onnx.ModelProto, clips: list[np.ndarray], manifest: ExportManifest) -> list[np.ndarray]:
    """Reference logits for consecutive clips, carrying states with onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    states = {s.input: np.zeros(s.shape, s.dtype) for s in manifest.states}
    logits = []
    for clip in clips:
        out = session.run(None, {manifest.inputs[0].name: clip, **states})
        logits.append(out[0])
        states = dict(zip(states, out[1:]))
    return logits
