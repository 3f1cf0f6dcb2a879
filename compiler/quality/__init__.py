"""Judging a student: metrics, latency percentiles, and the gates that decide what ships."""
