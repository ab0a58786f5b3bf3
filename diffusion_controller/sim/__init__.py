"""The simulated Panda (PyBullet) with a camera, the two-way-round task and its demonstrator."""
