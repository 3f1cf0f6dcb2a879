"""Jinja2 templates for the files distillc emits (shipped as package data)."""
