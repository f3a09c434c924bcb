"""What viewers receive: SRT re-serve, and later WebRTC, LL-HLS, forwards, transcodes."""
