"""The engine: kinds register here, and the runner, planner and reconciler drive their jobs.

It decides; the store (``prodinf.store``) reads and writes.
"""
