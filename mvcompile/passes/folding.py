"""What the folding passes share: which op after a convolution can be folded into it."""
from __future__ import annotations

from mvcompile.ir.graph import Graph


def foldable(g: Graph, n: str) -> bool:
    """`n` reads a conv that nothing else reads and that is not a graph output, so the conv can absorb it."""
    (conv,) = g.node(n)["inputs"]
    return g.node(conv)["op"] == "conv" and g.users(conv) == [n] and conv not in g.outputs
