"""Video in: PyAV decoding, timestamp resampling, center crop, errors, and `mvcompile run --video`."""
from __future__ import annotations

import http.server
import json
import threading
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import SPECS, Artifacts
from mvcompile.cli import main
from mvcompile.lower.pipeline import export_model
from mvcompile.lower.torch import stream, to_torch
from mvcompile.runtime.video import Resampler, VideoError, sample_video
from videos import level, write_video


def _picked(times: list[float], rate: float) -> list[int]:
    """Indices of the decoded frames (at `times`) that feed a model at `rate`."""
    r = Resampler(rate)
    return [picked for i, t in enumerate(times) for picked in r.feed(Fraction(t).limit_denominator(10**6), i)]


def test_resampler_picks_the_nearest_frame() -> None:
    at25 = [i / 25 for i in range(50)]
    assert _picked(at25, 5) == list(range(0, 50, 5))
    assert _picked(at25, 8.33333) == list(range(0, 50, 3))  # A4's rate: every 3rd frame of 25 fps
    assert _picked(at25, 12.5) == list(range(0, 50, 2))
    assert _picked([0, 0.2, 0.4], 12.5) == [0, 0, 1, 1, 2, 2]  # slower video: frames repeat
    assert _picked([0, 0.05, 0.31, 0.39, 0.45], 5) == [0, 2, 3]  # variable frame rate: nearest in time
    assert _picked([0, 0.1, 0.1, 0.05, 0.2], 5) == [0, 4]  # repeated and backwards timestamps are skipped
    with pytest.raises(VideoError, match="frame rate"):
        Resampler(0)


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
@pytest.mark.parametrize("width,height", [(96, 48), (48, 96)])
def test_video_is_resampled_cropped_and_scaled(tmp_path: Path, codec: str, width: int, height: int) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV's FFmpeg has no {codec}")
    path = write_video(tmp_path / "clip.mp4", codec=codec, width=width, height=height)
    steps = list(sample_video(str(path), [(5, 32), (12.5, 20)]))
    at5 = [(t, new[0][0]) for t, new in steps if new[0]]
    assert [round(t, 6) for t, _ in at5] == [round(i * 0.2, 6) for i in range(10)]
    assert sum(len(fs[1]) for _, fs in steps) == 25
    for k, (_, frame) in enumerate(at5):
        assert frame.shape == (32, 32, 3) and frame.dtype == np.float32
        center = frame[12:20, 12:20].mean() * 255
        assert abs(center - level(5 * k)) <= 4, (k, center)
        assert frame.max() * 255 <= level(5 * k) + 16  # the white bands are cropped away


def test_open_errors_name_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match=f"{missing}: no such file"):
        list(sample_video(str(missing), [(5, 32)]))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match=f"{corrupt}: cannot"):
        list(sample_video(str(corrupt), [(5, 32)]))
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    with pytest.raises(VideoError, match=f"{audio}: no video stream"):
        list(sample_video(str(audio), [(5, 32)]))
    url = "rtsp://127.0.0.1:9/cam"  # nothing listens on the discard port
    with pytest.raises(VideoError, match=f"{url}: cannot open stream"):
        list(sample_video(url, [(5, 32)], timeout=2))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_stream_url_is_decoded_like_a_file(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        from_url = [fs[0][0] for _, fs in sample_video(f"{url}/clip.mp4", [(5, 32)], timeout=5)]
        from_file = [fs[0][0] for _, fs in sample_video(str(clip), [(5, 32)])]
        assert len(from_url) == 10 and all(np.array_equal(a, b) for a, b in zip(from_url, from_file))
        with pytest.raises(VideoError, match=f"{url}/missing.mp4: cannot open stream: .*404"):
            list(sample_video(f"{url}/missing.mp4", [(5, 32)], timeout=5))
    finally:
        server.shutdown()


@pytest.fixture
def tiny_artifact(artifacts: Artifacts) -> Path:
    return artifacts()  # the tiny stream spec, seed 1, for this machine


def test_run_video_streams_the_resampled_frames(tiny_artifact: Path, tmp_path: Path, capsys) -> None:
    clip = write_video(tmp_path / "clip.mp4")
    assert main(["run", str(tiny_artifact), "--video", str(clip), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == result["calls"] == 10 and abs(result["seconds"] - 1.8) < 1e-6
    frames = np.stack([fs[0][0] for _, fs in sample_video(str(clip), [(5, 32)])])[None]
    module = to_torch(export_model(SPECS / "tiny.yaml", variant="stream", seed=1, fold=False).graph)
    with torch.no_grad():
        outs, _ = stream(module, torch.from_numpy(frames), [1] * frames.shape[1])
    assert np.abs(np.array(result["logits"]) - outs[-1].numpy()).max() <= 1e-4

    assert main(["run", str(tiny_artifact), "--video", str(clip), "--every", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("frame")] == ["3", "6", "9"]
    assert lines[-2].startswith("final after 10 frames (1.80 s of video):")


def test_run_video_errors_are_one_line(tiny_artifact: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.mp4"
    assert main(["run", str(tiny_artifact), "--video", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: no such file"
    clip = write_video(tmp_path / "clip.mp4", frames=3)
    with pytest.raises(SystemExit) as stop:  # refused by the argument parser, before the video is opened
        main(["run", str(tiny_artifact), "--video", str(clip), "--every", "0"])
    assert stop.value.code == 2 and "argument --every: must be >= 1, got 0" in capsys.readouterr().err
