"""The graph's steps, one a file: route (refine the last round, then the policy decides),
dispatch (one call, a parallel branch each), refine (merge a round's outputs)."""

from orchestra._nodes.dispatch import dispatch_node
from orchestra._nodes.refine import refine_node
from orchestra._nodes.route import route_node

__all__ = ["dispatch_node", "refine_node", "route_node"]
