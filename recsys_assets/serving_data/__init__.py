"""What the serving app reads, built by the pipeline: vector indexes, precomputed candidates, the release.

Library code (no dagster): the index and candidate assets write through it, the Ray Serve app reads
through it, and only the store objects know whether they talk to local files or to servers.
"""
