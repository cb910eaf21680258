"""What /readyz says: whether the server can answer, and as much of what it serves as the caller's pass may see."""

from __future__ import annotations

from .access import Pass
from .errors import NotReady
from .runtime import Runtime


def check_ready(rt: Runtime) -> None:
    """NotReady until /embed can be answered: `default` served, every collection loaded or failed, the
    encoder thread running."""
    rt.default.require_bundle()
    loading = [c.name for c in rt.collections() if c.status() == "loading"]
    if loading:
        raise NotReady(f"{len(loading)} collection(s) still loading; retry shortly", headers={"Retry-After": "2"})
    if not rt.batcher.running:
        raise NotReady(rt.batcher.error or "the encoder is not running", headers={"Retry-After": "5"})


def sees_names(rt: Runtime, caller: Pass) -> bool:
    """Collection names are the operator's to see: anyone while the server has no access key (no tenants),
    else only the admin token."""
    return caller.admin or not rt.keys.any


def ready_report(rt: Runtime, caller: Pass) -> dict:
    """The operator sees everything, a reader of `default` that collection, anyone else (once access keys
    exist) only whether the server is ready and the request limits every client must know."""
    operator = sees_names(rt, caller)
    if not (operator or caller.sees("default")):
        statuses = [c.status() for c in rt.collections()]  # no name leaves: only whether all are ready
        return {"status": "ready" if all(st == "ready" for st in statuses) else "degraded",
                "limits": rt.default.reports.limits(),
                "detail": "send the admin token (or a key for collection default) to see what is served"}
    report = rt.default.reports.ready_report()
    if operator:
        report["collections"] = {c.name: {"status": c.status(), "documents": c.summary()["documents"],
                                          "active_version": c.versions.active(),
                                          "error": c.load_error or c.config.get("problem"),
                                          "refused": c.refused} for c in rt.collections()}
        report["read_access"] = rt.gate.read_access()  # who may search and embed now, and why
    report["models_loaded"] = len(rt.encoders)
    if any(c.status() != "ready" for c in rt.collections()):
        report["status"] = "degraded"
    return report
