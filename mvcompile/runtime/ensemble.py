"""EnsembleSession: run an ensemble artifact (member artifacts + manifest.json) as one model.

Routing `alternate` (temporal ensemble, paper 3.3): `push(frames)` takes [B, 2F, H, W, 3] at the
ensemble's frame rate; frames 0, 2, … go to member 0 and 1, 3, … to member 1 (F frames each).
Routing `each` (A6 = A4 + A5): `push({member: frames})` feeds each named member its own frames at its
own resolution and frame rate; members not named wait. Either way the result is the mean of the
latest logits of every member that has produced any.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from mvcompile.artifact.format import (MANIFEST, ArtifactError, is_ensemble, read_manifest, read_signed_manifest,
                                        sha256_file)
from mvcompile.artifact.manifest import AnyManifest, EnsembleManifest, Tensor
from mvcompile.artifact.signing import verify_folder
from mvcompile.runtime.frames import FrameError, check_frame_values
from mvcompile.runtime.session import StreamSession



@dataclass
class Member:
    """One member: its name (and directory), its session and its latest logits."""

    name: str
    session: StreamSession
    logits: np.ndarray | None = None

    @property
    def input_shape(self) -> list[int]:
        """[B, F, H, W, 3]: the frames one call of this member takes."""
        return list(self.session.manifest.frame_input.shape)


def read_ensemble_manifest(artifact_dir: Path) -> EnsembleManifest:
    """An ensemble's manifest.json, signed and valid, with each member's manifest matching its sha256
    (each member artifact is checked in full when its session loads)."""
    artifact_dir = Path(artifact_dir)
    manifest = read_signed_manifest(artifact_dir, EnsembleManifest)
    for m in manifest.members:
        member_manifest = artifact_dir / m.dir / MANIFEST
        if not member_manifest.is_file() or member_manifest.is_symlink():
            raise ArtifactError(f"{member_manifest}: missing")
        if sha256_file(member_manifest) != m.manifest_sha256:
            raise ArtifactError(f"{member_manifest}: sha256 does not match {artifact_dir / MANIFEST} "
                                "(member replaced or modified)")
    return manifest


class EnsembleSession:
    """A loaded ensemble artifact: one StreamSession per member, logits averaged.

    Frames are checked as `StreamSession.push` checks them (`check_range`), all before any member runs.
    """

    def __init__(self, artifact_dir: str | Path, *, num_threads: int | None = None, pin_threads: bool | None = None,
                 check_range: bool = True, trusted_keys: Sequence[str | Path | bytes] | None = None) -> None:
        self._dir = Path(artifact_dir)
        if trusted_keys is not None:  # one signature covers every member's files
            verify_folder(self._dir, list(trusted_keys))
        self._manifest = read_ensemble_manifest(self._dir)
        self._check_range = check_range
        self.members = [Member(m.name, StreamSession(self._dir / m.dir, num_threads=num_threads,
                                                     pin_threads=pin_threads, check_range=check_range))
                        for m in self._manifest.members]
        self._check_members()

    @property
    def manifest(self) -> EnsembleManifest:
        """The validated ensemble manifest (routing, members, and for `alternate` the frame input)."""
        return self._manifest

    def reset(self) -> None:
        """Zero every member's states and forget their logits, as at the start of a new video."""
        for m in self.members:
            m.session.reset()
            m.logits = None

    def push(self, frames: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Feed frames (see the module doc for each routing); returns the averaged logits [B, classes]."""
        if self._manifest.routing == "alternate":
            if not isinstance(frames, np.ndarray):
                raise FrameError("this temporal ensemble takes one array [B, 2F, H, W, 3]; frames alternate between members")
            self._check_alternate(frames)
            frames = np.ascontiguousarray(frames)  # checked as the members get it (a masked array's mask is not)
            check_frame_values(frames, check_range=self._check_range)
            for i, m in enumerate(self.members):
                m.logits = m.session.push(np.ascontiguousarray(frames[:, i::2]))
        else:
            if not isinstance(frames, Mapping) or not frames:
                raise FrameError(f"this ensemble takes {{member: frames}} for members {self.member_names()}")
            unknown = sorted(set(frames) - set(self.member_names()))
            if unknown:
                raise FrameError(f"unknown ensemble member(s) {unknown}; members are {self.member_names()}")
            fed = [m for m in self.members if m.name in frames]
            plain = {}
            for m in fed:  # all checked before any member's state moves on
                _check_member_frames(m, frames[m.name])
                plain[m.name] = np.ascontiguousarray(frames[m.name])  # as the member gets it
                check_frame_values(plain[m.name], check_range=self._check_range, of=f"member {m.name}'s frames")
            for m in fed:
                m.logits = m.session.push(plain[m.name])
        return np.mean([m.logits for m in self.members if m.logits is not None], axis=0)

    def member_names(self) -> list[str]:
        """Member names in manifest order."""
        return [m.name for m in self.members]

    def _alternate_input(self) -> Tensor:
        frame_input = self._manifest.frame_input
        assert frame_input is not None, "the schema requires inputs for routing 'alternate'"
        return frame_input

    def _check_alternate(self, frames: np.ndarray) -> None:
        expected = self._alternate_input().shape
        if frames.dtype != np.float32 or list(frames.shape) != expected:
            raise FrameError(f"frames must be float32 {expected} [B, 2F, H, W, C] (F frames per member), "
                             f"got {frames.dtype} {list(frames.shape)}")

    def _check_members(self) -> None:
        first = self.members[0].session.manifest
        for m in self.members[1:]:
            for key in ("num_classes", "batch"):
                if getattr(m.session.manifest, key) != getattr(first, key):
                    raise ArtifactError(f"{self._dir}: members {self.members[0].name} and {m.name} differ in {key}")
        if self._manifest.routing == "alternate":
            b, t2, h, w, c = self._alternate_input().shape
            for m in self.members:
                if m.input_shape != [b, t2 // 2, h, w, c] or t2 % 2:
                    raise ArtifactError(f"{self._dir}: member {m.name} input {m.input_shape} does not take half of "
                                        f"the ensemble input {[b, t2, h, w, c]}")


def _check_member_frames(member: Member, frames: object) -> None:
    expected = member.input_shape
    if not isinstance(frames, np.ndarray) or frames.dtype != np.float32 or list(frames.shape) != expected:
        got = f"{frames.dtype} {list(frames.shape)}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise FrameError(f"member {member.name} takes float32 {expected} [B, T, H, W, C], got {got}")


def load_manifest(artifact_dir: str | Path) -> AnyManifest:
    """The checked manifest of a model or an ensemble artifact."""
    return read_ensemble_manifest(Path(artifact_dir)) if is_ensemble(Path(artifact_dir)) else read_manifest(Path(artifact_dir))


def load_session(artifact_dir: str | Path, *, num_threads: int | None = None, pin_threads: bool | None = None,
                 check_range: bool = True,
                 trusted_keys: Sequence[str | Path | bytes] | None = None) -> StreamSession | EnsembleSession:
    """A StreamSession for a model artifact, an EnsembleSession for an ensemble artifact."""
    cls = EnsembleSession if is_ensemble(Path(artifact_dir)) else StreamSession
    return cls(artifact_dir, num_threads=num_threads, pin_threads=pin_threads, check_range=check_range,
               trusted_keys=trusted_keys)


def require_frame_input(manifest: AnyManifest, artifact_dir: str | Path) -> Tensor:
    """The frame input of a model or `alternate` ensemble; ArtifactError for an ensemble whose members take
    different inputs (only a video can feed it)."""
    if manifest.frame_input is None and isinstance(manifest, EnsembleManifest):  # `each` routing
        members = ", ".join(f"{m.name}: {m.resolution} px at {m.frame_rate:g} fps" for m in manifest.members)
        raise ArtifactError(f"{artifact_dir}: ensemble '{manifest.name}' feeds each member its own input "
                            f"({members}); run it on a video with --video")
    return manifest.frame_input
