"""Array operations: boxes, anchors, label assignment, losses, NMS, post-processing."""
