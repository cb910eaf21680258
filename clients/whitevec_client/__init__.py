"""whitevec-client: the Python SDK for a whitevec server."""

from ._client import AsyncClient, AsyncCollection, Client, Collection
from .errors import (AuthError, JobFailed, NotFound, NotReady, Overloaded, ServerError, ValidationError, VersionChanged,
                     WhitevecError)
from .types import Hit, Job, JobProgress

__all__ = ["AsyncClient", "AsyncCollection", "AuthError", "Client", "Collection", "Hit", "Job", "JobFailed", "JobProgress", "NotFound", "NotReady",
           "Overloaded", "ServerError", "ValidationError", "VersionChanged", "WhitevecError"]
__version__ = "0.1.0"
