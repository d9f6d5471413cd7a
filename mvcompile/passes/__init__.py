"""IR → IR passes, each a named object whose precondition and guarantee are checked when it runs."""
from mvcompile.passes.base import Pass, PassError, Pipeline, PostconditionError, PreconditionError, Trace
from mvcompile.passes.ensemble import Ensemble, ensemble
from mvcompile.passes.fold_batchnorm import FoldBatchNorm, fold_batchnorm
from mvcompile.passes.fold_conv_scale import FoldConvScale, fold_conv_scale
from mvcompile.passes.insert_stream_buffers import InsertStreamBuffers, insert_stream_buffers
from mvcompile.passes.make_causal import MakeCausal, make_causal
from mvcompile.passes.pipelines import MODE_PIPELINES, PIPELINES

__all__ = ["MODE_PIPELINES", "PIPELINES", "Ensemble", "FoldBatchNorm", "FoldConvScale", "InsertStreamBuffers",
           "MakeCausal", "Pass", "PassError", "Pipeline", "PostconditionError", "PreconditionError", "Trace",
           "ensemble", "fold_batchnorm", "fold_conv_scale", "insert_stream_buffers", "make_causal"]
