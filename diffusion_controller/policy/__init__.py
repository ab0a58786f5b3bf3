"""The learning side: observation encoder, conditional 1-D U-Net, DDIM sampler, training, artifacts.

Imports torch and numpy only; nothing here knows about ROS.
"""
