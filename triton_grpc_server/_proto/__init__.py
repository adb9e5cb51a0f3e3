"""Generated gRPC/protobuf modules (built from protos/ by setup.py, not committed)."""
