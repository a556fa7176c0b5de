"""The GPU lane: image and video jobs run by worker processes, behind one job queue."""
