"""IR → IR passes. Each module holds one pass; each pass returns a new graph and checks its guarantee."""
from mvcompile.passes.ensemble import ensemble, temporal_ensemble
from mvcompile.passes.fold_batchnorm import fold_batchnorm
from mvcompile.passes.fold_conv_scale import fold_conv_scale
from mvcompile.passes.infer_shapes import infer_shapes
from mvcompile.passes.insert_stream_buffers import insert_stream_buffers
from mvcompile.passes.make_causal import make_causal

__all__ = ["ensemble", "fold_batchnorm", "fold_conv_scale", "infer_shapes", "insert_stream_buffers", "make_causal", "temporal_ensemble"]
