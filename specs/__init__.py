"""Runnable example specs (shipped as package data)."""
