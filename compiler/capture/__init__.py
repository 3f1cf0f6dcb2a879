"""Capturing a live endpoint's traffic (`distillc capture`) as `chat_log` records to distil from."""
