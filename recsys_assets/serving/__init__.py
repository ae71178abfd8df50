"""The Ray Serve application: FastAPI ingress over the recommender, reloading on each new release.

Imports library code and settings only, never the orchestration layer (it runs in Ray replicas).
"""
