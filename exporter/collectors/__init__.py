"""Database collectors, one module each, the SQL beside the metrics it feeds.

Each module declares its collector as a subclass of `exporter.sources.Collector`: its name,
its settings and an object made per target whose `collect(conn)` returns the families of one
run. Defining the class registers it; exporter/sources.py is the one list of collectors.
"""
