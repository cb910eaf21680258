"""What the service reports about itself: /readyz, the versions list, one-line descriptions."""

from __future__ import annotations

import logging
from whitevec.index.bundle import Bundle
from whitevec.models import engines
from whitevec.models.encoder import Encoder, choose_engine
from whitevec.models.loader import bundled_model_dir
from whitevec.models.tuning import suggestion

from .clock import iso
from .settings import Settings
from .state import CollectionState

log = logging.getLogger("whitevec")


class Reports:
    """Read-only views of one collection's state and the server's settings; never paths outside the data
    dir's own names."""

    def __init__(self, state: CollectionState, settings: Settings) -> None:
        self.state = state
        self.settings = settings

    def describe(self) -> str:
        b = self.state.bundle
        if b is None:
            return "loading"
        held = (f"{b.layout.count(b.retriever)} documents" if b.layout.setting is None else
                f"{b.retriever.count()} passages of {b.layout.count(b.retriever)} documents") if b.retriever else ""
        index = f"{b.retriever.spec.type} index of {held} on {self.index_device(b)}" if b.retriever else "no index"
        return f"model {b.encoder.identity.name} ({b.encoder.pooling.mode}) on {b.encoder.device}, {index}"

    @staticmethod
    def index_device(bundle: Bundle) -> str | None:
        return bundle.retriever.device if bundle.retriever is not None else None

    def no_index_message(self) -> str:
        name = self.state.name
        route = "/admin/index/rebuild" if name == "default" else f"/admin/collections/{name}/rebuild"
        where = "" if name == "default" else f" --collection {name}"
        if self.state.refused is not None:
            return (f"the active version {self.state.refused['version']} cannot be served ({self.state.refused['reason']}) "
                    f"and no other intact version exists: rebuild the index (POST {route})")
        what = "no index has been built yet" if name == "default" else f"collection {name} has no documents yet"
        return (f"{what}: POST {route} with documents, or run `whitevec index build FILE.jsonl{where}`")

    def model_source(self, encoder: Encoder) -> str:
        """Where the served model comes from, without absolute paths."""
        path = encoder.model_dir
        if path == bundled_model_dir().resolve():
            return "bundled"
        try:
            where = "bundle dir: " if self.settings.bundle_dir is not None else "data dir: "
            return where + str(path.relative_to(self.settings.data_root.resolve()))
        except ValueError:
            return "model folder " + path.name

    def engine_choice(self) -> dict:
        """What WHITEVEC_ENGINE gives new versions on this machine, why, and the CPU flags it looked at."""
        s = self.settings
        choice = choose_engine(s.engine, s.device)
        shown = (*engines.INT8_FLAGS, *(flag for _, flag, _ in engines.CPU_CANDIDATES), "avx2", "avx512f")
        flags = sorted(f for f in engines.cpu_flags() if f in shown)
        return {"configured": s.engine, "engine": choice.engine, "reason": choice.reason, "cpu_flags": flags}

    def limits(self) -> dict:
        """The request limits every client may read (the SDK splits its requests by them)."""
        s = self.settings
        return {"max_texts": s.max_texts, "max_text_chars": s.max_text_chars, "max_k": s.max_k,
                "max_body_bytes": s.max_body_bytes, "max_nprobe": s.max_nprobe, "max_ef_search": s.max_ef_search}

    def ready_report(self) -> dict:
        bundle = self.state.require_bundle()
        enc, r, w = bundle.encoder, bundle.retriever, bundle.pipeline.whitening
        return {
            "status": "ready" if self.state.refused is None else "degraded",
            "model": enc.identity.name,
            "model_source": self.model_source(enc),
            "pooling": enc.pooling.mode,
            "tokenizer": enc.tokenizer.kind,
            "encoder_device": str(enc.device),
            "engine": enc.engine,
            "engine_reason": bundle.engine_reason,
            "engine_choice": self.engine_choice(),
            "dim": bundle.pipeline.output_dim(),
            "model_dim": enc.dim,
            "version": bundle.version,
            "refused": self.state.refused,
            "whitening": None if w is None else {"version": w.version, **w.params.to_dict()},
            "limits": self.limits(),
            "index": {
                "loaded": r is not None,
                "type": r.spec.type if r else None,
                "spec": r.spec.to_dict() if r else None,
                "device": self.index_device(bundle),
                "count": bundle.layout.count(bundle.retriever) if bundle.retriever else 0,
                **({"passages": bundle.retriever.count(), "passage_setting": bundle.layout.setting.to_dict()}
                   if bundle.retriever and bundle.layout.setting is not None else {}),
                "pending_changes": bundle.retriever.pending_changes() if bundle.retriever else 0,
            },
        }

    def versions_report(self) -> list[dict]:
        """Every kept version, newest first: times, counts, model, whitening, index, which is active."""
        active = self.state.versions.active()
        activated: dict[str, list[float]] = {}
        for h in self.state.versions.history():
            activated.setdefault(h["version"], []).append(h.get("activated_at"))
        served = self.state.bundle.version if self.state.bundle is not None else None
        out = []
        for version in reversed(self.state.versions.versions()):
            try:
                m = self.state.versions.manifest(version)
            except (OSError, ValueError) as exc:
                out.append({"version": version, "active": version == active, "damaged": f"manifest unreadable: {exc}"})
                continue
            w = m.get("whitening", {})
            out.append({
                "version": version, "active": version == active, "served": version == served,
                "created_at": iso(m.get("created_at")), "activated_at": iso((activated.get(version) or [None])[0]),
                "documents": (m.get("passages") or {}).get("documents", m.get("documents", {}).get("count")),
                **({"passages": m["passages"]} if m.get("passages") else {}),
                "changes": self._changes_report(version, m),
                "model": {k: m.get("model", {}).get(k) for k in ("name", "fingerprint", "pooling", "engine", "dim")},
                "whitening": {**w.get("params", {}), "output_dim": w.get("output_dim"), "fitted_on": w.get("n_vectors"),
                              **({"tuned": {k: w["tuned"].get(k) for k in ("pairs", "reason", "held_out")}}
                                 if w.get("tuned") else {}),
                              **({"suggestion": suggestion(w["anisotropy"])} if "anisotropy" in w else {})},
                "index": m.get("index", {}).get("spec"),
            })
        return out

    def _changes_report(self, version: str, manifest: dict) -> dict:
        """Upserts and deletes logged to a version since its build, and its live document count."""
        bundle = self.state.bundle
        if bundle is not None and bundle.version == version and bundle.retriever is not None:
            return {**bundle.retriever.change_counts(), "live_documents": bundle.layout.count(bundle.retriever)}
        found = self.state.versions.changes_report(version, manifest)
        passages = manifest.get("passages")
        if passages and "live_documents" in found:  # the store counts rows: documents are known until a change
            changed = found.get("added", 0) or found.get("gone", 0)
            return {"added_rows": found.get("added", 0), "gone_rows": found.get("gone", 0),
                    "live_rows": found["live_documents"], "live_documents": None if changed else passages["documents"]}
        return found
