"""The model repository: layout scan, config.pbtxt + auto-complete, versions, lifecycle."""
from .manager import ModelRepository, ModelVersion

__all__ = ["ModelRepository", "ModelVersion"]
