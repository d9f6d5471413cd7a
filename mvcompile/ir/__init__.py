"""Graph IR: typed op nodes with shapes and named weights."""
from mvcompile.ir.builder import build_graph
from mvcompile.ir.graph import TRAINABLE_KINDS, Graph, StateSpec, WeightSpec
from mvcompile.ir.ops import IRError

__all__ = ["TRAINABLE_KINDS", "Graph", "IRError", "StateSpec", "WeightSpec", "build_graph"]
