"""Edge servers: pull streams from an origin on demand and report their viewers back to it."""
