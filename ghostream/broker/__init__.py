"""Live streams in memory: one publisher, any number of readers, each with its own cursor."""
