"""The contract between `training/` and `app/`: what both must agree on, in one place.

The model card, the model repository's layout, image decoding and each task's pure-numpy pre- and
post-processing, and one pipeline object per task. It depends on numpy, pillow and pydantic alone
(a test enforces it): no web stack, no ONNX Runtime, no torch. Errors are plain exceptions
(`contract.errors`) that the service maps to HTTP statuses.
"""
