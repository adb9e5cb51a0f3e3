"""Triton's Python backend: ``model.py`` with ``TritonPythonModel``, one process per instance.

The server side lives here (:mod:`.backend`, :mod:`.instance`); the instance
process and the transport both sides share are in ``triton_grpc_server.pb_stub``.
"""
