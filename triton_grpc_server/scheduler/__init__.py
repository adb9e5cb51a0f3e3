"""Per-model scheduling between the data plane and the backend instances."""
from .instance_pool import InstancePool

__all__ = ["InstancePool"]
