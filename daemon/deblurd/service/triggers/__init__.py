"""Shutter triggers: GPIO button, terminal key (ZeroMQ control lives in service)."""
