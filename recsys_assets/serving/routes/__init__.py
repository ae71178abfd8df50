"""The API's routes, one `APIRouter` per concern (`create_app` includes them all); what they share is in
`shared`.

Handlers are `async def` on purpose: each request is a few ms of CPU (feature reads from a local store, one
forward pass); running them inline on the event loop beats a thread pool whose threads only take turns on the
GIL (measured: bench/serving.py).
"""
