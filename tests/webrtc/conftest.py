"""WebRTC tests run in a network namespace with only loopback (see test_in_netns.py).

The tests under inner/ open real peer connections; they are collected only inside that namespace,
where the outer test sets KOMBAIN_NETNS_INNER=1.
"""

import os

collect_ignore_glob = [] if os.environ.get("KOMBAIN_NETNS_INNER") == "1" else ["inner/*"]
