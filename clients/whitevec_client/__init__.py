"""whitevec-client: the Python SDK for a whitevec server."""

from ._client import AsyncClient, Client
from .errors import (AuthError, JobFailed, NotFound, NotReady, Overloaded, ServerError, ValidationError, VersionChanged,
                     WhitevecError)
from .types import Hit, Job, JobProgress

__all__ = ["AsyncClient", "AuthError", "Client", "Hit", "Job", "JobFailed", "JobProgress", "NotFound", "NotReady",
           "Overloaded", "ServerError", "ValidationError", "VersionChanged", "WhitevecError"]
__version__ = "0.1.0"
