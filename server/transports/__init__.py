"""Transports: one thin adapter per wire protocol over the same call (see server/host.py)."""
