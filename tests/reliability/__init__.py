"""Reliability suite: faults, hostile peers, load, leaks, security, observability (see README-reliability)."""
