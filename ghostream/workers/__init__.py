"""Several worker processes on the same public ports, under a parent that only supervises.

Each worker is a whole server (`ghostream.server.serve`) started as
`python -m ghostream --worker I`: the same program, configuration and logs
as a single process, with its share of the ports (`shares`) and its link to
the parent (`link`).  The parent (`parent`) starts them, restarts one that
dies, and stops them all on SIGINT/SIGTERM.
"""
