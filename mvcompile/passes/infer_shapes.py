"""Shape inference over the whole graph."""
from mvcompile.ir.graph import Graph


def infer_shapes(g: Graph) -> Graph:
    """Return a copy whose every node has its shape and dtype recomputed from its inputs.

    Guarantees: shapes are consistent along every edge; raises IRError naming the first node whose
    inputs it cannot take.
    """
    out = g.copy()
    out.infer_all()
    return out
