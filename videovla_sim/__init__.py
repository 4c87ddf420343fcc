"""A MuJoCo tabletop arm with a camera, language-conditioned tasks and a scripted expert (no ROS, no torch)."""
