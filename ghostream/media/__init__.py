"""Container and codec formats as pure code: bytes in, values or typed errors out, no I/O."""
