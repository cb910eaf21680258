"""whitevec-client: the Python SDK for a whitevec server."""

from typing import TYPE_CHECKING, Any

from ._async import AsyncClient, AsyncCollection
from ._client import Client, Collection
from .errors import (AuthError, Conflict, InvalidRequest, JobFailed, NotFound, NotReady, Overloaded, ServerError,
                     VersionChanged, WhitevecError)
from .errors import renamed as _renamed
from .types import (Activated, AutoWhitening, CollectionDeleted, Deleted, Document, Example, Filter, Fusion, Group,
                    Hit, HitExplain, Hits, IndexSpec, Job, JobProgress, KeyRevoked, Pair, PassageHit, Passages,
                    PassageSpan, RrfFusion, SearchMode,
                    SearchSetting, SearchTuning, SideExplain, StoredDocument, TrainJob, Upserted, VersionList,
                    WeightedFusion, Whitening)

__all__ = ["Activated", "AsyncClient", "AsyncCollection", "AuthError", "AutoWhitening", "Client", "Collection",
           "CollectionDeleted", "Conflict", "Deleted", "Document", "Example", "Filter", "Fusion", "Group", "Hit", "HitExplain",
           "Hits", "IndexSpec", "InvalidRequest", "Job", "JobFailed", "JobProgress", "KeyRevoked", "NotFound",
           "NotReady", "Overloaded", "Pair", "PassageHit", "Passages", "PassageSpan", "RrfFusion", "SearchMode", "SearchSetting", "SearchTuning",
           "ServerError", "SideExplain", "StoredDocument", "TrainJob", "Upserted", "VersionChanged", "VersionList",
           "WeightedFusion", "Whitening", "WhitevecError"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .errors import ValidationError as ValidationError  # deprecated: InvalidRequest
else:
    def __getattr__(name: str) -> Any:
        return _renamed(__name__, name)
