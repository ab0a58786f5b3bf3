"""Session-wide test settings.

Each pytest session gets a DDS domain of its own so that parallel test runs on one machine (and
the developer's own nodes) never see each other's topics.
"""

from __future__ import annotations

import os

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("OMP_NUM_THREADS", "1")
