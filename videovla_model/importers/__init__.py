"""Datasets in and out of the episode format: LeRobotDataset v3 (import and export) and rosbag2 (import).

ROS-free: rosbag2 files are read with `rosbags` (pure Python), LeRobot's parquet files with `pyarrow` and its
videos with `av`. The command line is `videovla-import` / `videovla-export` (`videovla_model.importers.cli`).
"""
