"""The history: an append-only event log of every session, its projections and queries."""
