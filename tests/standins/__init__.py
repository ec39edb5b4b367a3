"""Loopback stand-ins for outside services, speaking their wire shapes on 127.0.0.1 only."""
