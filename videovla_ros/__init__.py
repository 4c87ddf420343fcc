"""ROS 2 nodes of the videovla suite and the pure helpers they use (conversion, scheduling, safety)."""
