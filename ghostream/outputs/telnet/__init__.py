"""Streams as colour text art over telnet: the listener, the shared pictures, the protocol."""

from ghostream.outputs.telnet.listener import TelnetOutput

__all__ = ["TelnetOutput"]
