"""The HTTP side of the server: ASGI apps served by Hypercorn on Trio."""
