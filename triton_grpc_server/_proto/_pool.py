"""The descriptor pool our generated modules register into.

tritonclient registers ``grpc_service.proto`` / ``model_config.proto`` with the
same ``inference.*`` symbols in protobuf's default pool; a private pool lets
both copies live in one process (tests compare them side by side).
"""
from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
