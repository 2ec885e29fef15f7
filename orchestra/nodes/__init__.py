"""The graph's nodes, one a file: route (policy decides), dispatch (one call), refine (merge)."""

from orchestra.nodes.dispatch import dispatch_node
from orchestra.nodes.refine import refine_node
from orchestra.nodes.route import route_node

__all__ = ["route_node", "dispatch_node", "refine_node"]
