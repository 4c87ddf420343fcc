"""VideoVLA in PyTorch: the joint video-action diffusion model, its policy, and fine-tuning.

Never imports rclpy. Importing this package is cheap and torch-free: the numpy policy contract lives in
`videovla_model.contract`; the model itself in submodules that import torch.
"""
