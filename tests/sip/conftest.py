"""tests/sip/inner holds real SIP calls; they are collected only inside the test's network namespace
(KOMBAIN_NETNS_INNER=1, set by test_in_netns.py)."""

import os

collect_ignore_glob = [] if os.environ.get("KOMBAIN_NETNS_INNER") == "1" else ["inner/*"]
