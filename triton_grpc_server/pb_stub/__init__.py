"""The instance process of the Python backend, and what it shares with the server.

Kept apart from ``backends`` so that starting an instance process imports only
numpy and these modules (not gRPC, protobuf or the server), which is most of
its start-up time.
"""
