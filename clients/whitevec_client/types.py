"""Response types; they mirror the server's OpenAPI schemas (a test compares the two)."""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional

from pydantic import BaseModel, Field


class Hit(BaseModel):
    id: str
    score: float
    text: str
    metadata: Dict[str, Any]


class JobProgress(BaseModel):
    done: int
    total: int
    phase: Optional[str] = None


class Job(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: JobProgress
    created_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    error: Optional[str]
    result: Optional[Dict[str, Any]]
    detail: Dict[str, Any] = Field(default_factory=dict)
    replica: Optional[str] = None
    collection: str = "default"

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")
