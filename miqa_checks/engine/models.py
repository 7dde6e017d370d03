"""Judges of the run: constructed once per process (weights load on first score), named by identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import JudgeError
from ..matrix import model_label
from ..prompts import MEDGEMMA_SYSTEM_PROMPT


class Models:
    """Model spec -> judge, its identity (None when it cannot be loaded), its system prompt."""

    def __init__(self, settings: Settings, errors: list[dict[str, str]]) -> None:
        self.settings = settings
        self.errors = errors  # the engine's error records; judge failures are appended
        self.judges: dict[str, Any] = {}
        self._identities: dict[str, str | None] = {}

    def judge(self, model: str):
        """The judge for a model spec, constructed once per process."""
        if model not in self.judges:
            from ..judges import JudgeSettings, load_judge

            t = self.settings
            self.judges[model] = load_judge(
                model,
                JudgeSettings(
                    method=t["scoring"],
                    device=t.device,
                    batch_size=t.batch_size,
                    max_new_tokens=t["max_new_tokens"],
                    system_prompt=self.system_prompt(model),
                    trust_remote_code=t.trust_remote_code,
                    home=(t.cache_dir or Path(".miqa_cache")),
                    seed=t.seed,
                ),
            )
        return self.judges[model]

    def system_prompt(self, model: str) -> str | None:
        """The profile's system prompt; under ``paper``, MedGemma gets the published one."""
        if self.settings["system_prompt"]:
            return self.settings["system_prompt"]
        if self.settings.profile == "paper" and "medgemma" in model.lower():
            return MEDGEMMA_SYSTEM_PROMPT
        return None

    def identity(self, model: str) -> str | None:
        """The judge's identity, or None when it cannot be loaded (the reason goes to ``errors``)."""
        if model not in self._identities:
            try:
                self._identities[model] = self.judge(model).identity()
            except JudgeError as exc:
                self._identities[model] = None
                self.failed(model, str(exc))
        return self._identities[model]

    def failed(self, model: str, reason: str) -> None:
        self.errors.append({"model": model_label(model), "dataset": "", "file_or_image": "", "stage": "judge", "reason": reason})

    def batch_size(self, model: str) -> int:
        return self.settings.batch_size or self.judge(model).default_batch_size

    def provenance(self) -> dict[str, Any]:
        """Per model: the judge's own provenance (only for judges that were constructed)."""
        out = {}
        for model, judge in self.judges.items():
            try:
                out[model_label(model)] = judge.provenance()
            except Exception as exc:  # noqa: BLE001 - provenance must never break reporting
                out[model_label(model)] = {"spec": model_label(model), "error": str(exc)}
        return out

    def close(self) -> None:
        for judge in self.judges.values():
            judge.close()
