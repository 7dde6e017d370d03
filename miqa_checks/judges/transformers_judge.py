"""Hugging Face judge: ``AutoProcessor`` + ``AutoModelForImageTextToText``, expected or generate scoring.

Checkpoint resolution (first ``identity()`` / ``score()``, never at construction):

1. ``checkpoint_factory`` (tiny checkpoints: built offline on first use);
2. a local folder (``spec`` is a directory);
3. a Hugging Face id, looked up in the local HF cache only (``local_files_only``). Nothing is
   downloaded: a model that is not on disk fails within seconds with a ``JudgeError`` that says
   how to provide it.

Safety: a checkpoint that ships its own code (``auto_map`` in a config, or a ``model_type``
transformers does not know) is refused unless ``settings.trust_remote_code`` is on
(``--miqa-trust-remote-code``). Pickled weights (``pytorch_model.bin``, ``*.pt``; unpickling can
run code) are refused by the same switch: without it only safetensors weights load.

Scoring (batched, LEFT padding, one forward pass per batch):

- ``expected``: logits at the last prompt position, softmax over the level tokens "1".."5"
  (every single-token form of a digit -- ``"3"``, ``" 3"``, ``"▁3"``, ``"Ġ3"`` -- logsumexp'd into
  its level), score = sum(p_k * k); the five probabilities are kept.
- ``generate``: greedy decoding, ``max_new_tokens``, new tokens only, the published parse rule;
  an unparsable answer is kept as ``parse_ok=False`` with the raw text (never dropped).
- embeddings (``request.embed``): last hidden layer mean-pooled over the non-pad tokens (the
  published definition) and the projected vision-tower tokens of the image mean-pooled.

Grey images are converted to RGB here, for the processor only (the records stay grey).
A failing batch is retried item by item; only the items that still fail become
``ScoreResult.failed``. Out-of-memory halves the batch size (down to 1) instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import JudgeError, MiqaUsageError
from ..prompts import parse_rating
from ..records import ScoreRequest, ScoreResult
from .base import SCORING_METHODS, Judge, JudgeSettings
from .spec import parse_model_spec

LEVELS = (1, 2, 3, 4, 5)
_WEIGHT_SAFE = (".safetensors",)
_WEIGHT_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_CONFIG_FILES = (
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "video_preprocessor_config.json",
)
_HASHED_SMALL_FILES = _CONFIG_FILES + (
    "tokenizer.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "special_tokens_map.json",
)
_MB = 1 << 20


def _fix_hint(spec: str) -> str:
    return (
        f"Provide {spec!r} locally: download it on a machine with hub access into the Hugging Face "
        f"cache (`huggingface-cli download {spec}`, then copy the cache folder, e.g. ~/.cache/huggingface/hub, "
        "here or point HF_HUB_CACHE at it), or pass a local checkpoint folder as --miqa-model."
    )


class TransformersJudge(Judge):
    """A VLM judge run in-process through the transformers Auto classes."""

    def __init__(
        self,
        spec: str,
        settings: JudgeSettings,
        checkpoint_factory: Callable[[], Path] | None = None,
    ) -> None:
        if settings.method not in SCORING_METHODS:
            raise MiqaUsageError(f"unknown scoring method {settings.method!r}; use one of {', '.join(SCORING_METHODS)}")
        if parse_model_spec(spec).kind == "tiny":
            from .tiny import FAMILIES, tiny_checkpoint

            if spec not in FAMILIES:
                raise MiqaUsageError(f"unknown tiny model {spec!r}; known: {', '.join(FAMILIES)}")
            if checkpoint_factory is None:
                home = settings.home

                def checkpoint_factory() -> Path:
                    return tiny_checkpoint(spec, home)
        self.spec = spec
        self.settings = settings
        self._factory = checkpoint_factory
        # resolved lazily
        self._folder: Path | None = None
        self._display: str | None = None
        self._revision: str | None = None
        self._weights_hash: str | None = None
        self._pickled = False
        self._device: str | None = None
        self._dtype = None
        self._model_type: str | None = None  # config.json model_type, checked before loading
        self._model = None
        self._processor = None
        self._level_ids: list[list[int]] | None = None
        self._batch_size: int | None = settings.batch_size
        self._image_token_id: int | None = None
        self._keeps_logits = False
        #: test hook: called with the batch length before each forward; True -> simulated OOM
        self._simulate_oom: Callable[[int], bool] | None = None

    # ------------------------------------------------------------------ resolution & metadata

    def _resolve(self) -> Path:
        if self._folder is not None:
            return self._folder
        spec = self.spec
        if self._factory is not None:
            folder = Path(self._factory())
            self._display = spec
        else:
            candidate = Path(spec).expanduser()
            if candidate.is_dir():
                folder = candidate.resolve()
                self._display = folder.name
                # a folder inside the HF cache: the snapshot name is the revision
                if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
                    self._display = folder.parent.parent.name[len("models--"):].replace("--", "/")
                    self._revision = folder.name
            elif parse_model_spec(spec).kind == "folder":
                # looks like a path, not an HF id (``org/name``); name only its last part (no paths in reports)
                raise JudgeError(
                    f"model folder {Path(spec).name!r} (given to --miqa-model) does not exist; pass an existing "
                    "checkpoint folder (config.json + *.safetensors + processor files) or a Hugging Face id "
                    "that is in the local Hugging Face cache."
                )
            else:
                folder = self._from_hf_cache(spec)
                self._display = spec
                self._revision = folder.name
        self._check_folder(folder)
        self._folder = folder
        return folder

    @staticmethod
    def _from_hf_cache(spec: str) -> Path:
        try:
            from huggingface_hub import snapshot_download

            path = snapshot_download(repo_id=spec, local_files_only=True)
        except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
            raise JudgeError(
                f"model {spec!r} is neither a local folder nor in the local Hugging Face cache, and the hub is "
                f"not used (offline) ({type(exc).__name__}). {_fix_hint(spec)}"
            ) from None
        return Path(path)

    def _refuse_remote_code(self, reasons: list[str]) -> None:
        """JudgeError unless the user opted in, when the checkpoint would run its own code."""
        if reasons and not self.settings.trust_remote_code:
            raise JudgeError(
                f"model {self._display!r} ships its own code ({'; '.join(reasons)}); refusing to run it. "
                "Review the code and pass --miqa-trust-remote-code to allow it."
            )

    def _check_folder(self, folder: Path) -> None:
        name = self._display or folder.name
        if not (folder / "config.json").is_file():
            raise JudgeError(f"model {name!r}: no config.json in the checkpoint folder; is it a transformers checkpoint?")
        needs_code: list[str] = []
        for fname in _CONFIG_FILES:
            path = folder / fname
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise JudgeError(f"model {name!r}: cannot read {fname}: {exc}") from None
            if isinstance(data, dict) and data.get("auto_map"):
                needs_code.append(f"auto_map in {fname}")
            if fname == "config.json" and isinstance(data, dict):
                self._model_type = data.get("model_type")
        self._refuse_remote_code(needs_code)
        files = [p for p in folder.iterdir() if p.is_file()]
        safe = [p for p in files if p.name.endswith(_WEIGHT_SAFE)]
        pickled = [p for p in files if p.name.endswith(_WEIGHT_PICKLED) and "training_args" not in p.name]
        if not safe:
            if not pickled:
                raise JudgeError(f"model {name!r}: no weight files (*.safetensors) in the checkpoint folder")
            if not self.settings.trust_remote_code:
                raise JudgeError(
                    f"model {name!r} has only pickled weights ({', '.join(sorted(p.name for p in pickled))}); "
                    "loading them can run arbitrary code. Convert them to safetensors, or pass "
                    "--miqa-trust-remote-code to allow pickled weights."
                )
            self._pickled = True

    def _hash_weights(self) -> str:
        if self._weights_hash is None:
            folder = self._resolve()
            h = hashlib.sha256()
            weight_ext = _WEIGHT_PICKLED + _WEIGHT_SAFE if self._pickled else _WEIGHT_SAFE
            for path in sorted(folder.iterdir()):
                if not path.is_file():
                    continue
                if path.name.endswith(weight_ext):
                    size = path.stat().st_size
                    h.update(f"{path.name}\0{size}\0".encode())
                    with path.open("rb") as fh:
                        h.update(fh.read(_MB))
                        if size > _MB:
                            fh.seek(max(size - _MB, _MB))
                            h.update(fh.read(_MB))
                elif path.name in _HASHED_SMALL_FILES:
                    h.update(f"{path.name}\0".encode())
                    h.update(path.read_bytes())
            self._weights_hash = h.hexdigest()
        return self._weights_hash

    def _resolve_device(self) -> None:
        if self._device is None:
            from .devices import resolve_device

            self._device = resolve_device(self.settings.device)

    @property
    def default_batch_size(self) -> int:
        """16 on the CPU, 32 on a GPU (the judge still halves on out-of-memory)."""
        try:
            self._resolve_device()
        except (JudgeError, MiqaUsageError):
            return 16
        return 16 if self._device == "cpu" else 32

    def embedding_source(self) -> str:
        return "hidden-state"

    def _method_tag(self) -> str:
        if self.settings.method == "generate":
            return f"generate-{self.settings.max_new_tokens}"
        return "expected"

    def identity(self) -> str:
        self._resolve()
        self._resolve_device()
        from .devices import dtype_label

        # an HF cache snapshot is immutable per commit: its revision names it; else hash the files
        rev = f"rev={self._revision}" if self._revision else f"sha256={self._hash_weights()[:16]}"
        return f"{self._display}@{rev}|{self._method_tag()}|{dtype_label(self._device)}"

    def provenance(self) -> dict[str, str]:
        from importlib.metadata import version

        from .devices import dtype_label

        ident = self.identity()
        return {
            "spec": self._display or "",
            "model": self._display or "",
            "revision": self._revision or "",
            "weights_sha256": "" if self._revision else self._hash_weights(),
            "dtype": dtype_label(self._device or "cpu"),
            "device": self._device or "",
            "method": self.settings.method,
            "max_new_tokens": str(self.settings.max_new_tokens) if self.settings.method == "generate" else "",
            "batch_size": str(self._batch_size or "auto"),
            "embeddings": self.embedding_source(),
            "transformers": version("transformers"),
            "torch": version("torch"),
            "identity": ident,
        }

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._model is not None:
            return
        folder = self._resolve()
        self._resolve_device()
        name = self._display
        from transformers import CONFIG_MAPPING, AutoModelForImageTextToText, AutoProcessor

        # checked here, not in _check_folder: importing the config registry imports torch, and a
        # fully stored (warm) run must not pay for that
        if self._model_type not in CONFIG_MAPPING:
            self._refuse_remote_code([f"model_type {self._model_type!r} unknown to transformers"])
        from .devices import default_dtype

        self._dtype = default_dtype(self._device)

        trust = bool(self.settings.trust_remote_code)
        try:
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust)
            model = AutoModelForImageTextToText.from_pretrained(
                folder,
                local_files_only=True,
                use_safetensors=not self._pickled,
                trust_remote_code=trust,
                dtype=self._dtype,
            )
        except Exception as exc:
            msg = str(exc).replace(str(folder), name or "<checkpoint>")
            raise JudgeError(f"model {name!r} could not be loaded: {type(exc).__name__}: {msg}") from None
        model.to(self._device)
        model.eval()
        if self._device == "cpu":
            from .devices import limit_cpu_threads

            limit_cpu_threads(sum(p.numel() for p in model.parameters()))
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise JudgeError(f"model {name!r}: its processor has no tokenizer")
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(processor, "chat_template", None) and getattr(tokenizer, "chat_template", None):
            processor.chat_template = tokenizer.chat_template
        if not getattr(processor, "chat_template", None):
            raise JudgeError(f"model {name!r}: the checkpoint has no chat template (chat_template.jinja)")
        self._processor = processor
        self._model = model
        import inspect

        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._level_ids = self._find_level_ids(tokenizer)
        config = model.config
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(config, attr, None)
            if isinstance(value, int):
                self._image_token_id = value
                break
        if self._batch_size is None:
            from .devices import auto_batch_size

            self._batch_size = auto_batch_size(self._device)

    def _find_level_ids(self, tokenizer) -> list[list[int]]:
        """Every single-token form of each digit 1..5 ("3", " 3", "▁3", "Ġ3", ...)."""
        vocab_size = len(tokenizer)
        unk = tokenizer.unk_token_id
        out: list[list[int]] = []
        for k in LEVELS:
            digit = str(k)
            ids: set[int] = set()
            for token in (digit, " " + digit, "\u2581" + digit, "\u0120" + digit):
                tid = tokenizer.convert_tokens_to_ids(token)
                if isinstance(tid, int) and 0 <= tid < vocab_size and tid != unk:
                    ids.add(tid)
            for text in (digit, " " + digit):
                enc = tokenizer.encode(text, add_special_tokens=False)
                if len(enc) == 1:
                    ids.add(enc[0])
            ids = {i for i in ids if tokenizer.decode([i]).strip() == digit}
            if not ids:
                raise JudgeError(
                    f"model {self._display!r}: its tokenizer has no single token for the level {digit!r}; "
                    "use --miqa-scoring generate"
                )
            out.append(sorted(ids))
        return out

    def close(self) -> None:
        if self._model is None:
            return  # never loaded (e.g. a fully stored run): nothing to free, no torch import
        self._model = None
        self._processor = None
        from .devices import empty_cache

        import gc

        gc.collect()
        empty_cache(self._device)

    # ------------------------------------------------------------------ scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        if not requests:
            return []
        self._load()
        from .devices import empty_cache, oom_exceptions

        oom = oom_exceptions()
        method = self.settings.method
        results: list[ScoreResult | None] = [None] * len(requests)
        i = 0
        while i < len(requests):
            bs = max(1, int(self._batch_size or 1))
            chunk = requests[i : i + bs]
            try:
                out = self._run_batch(chunk)
            except JudgeError:
                raise
            except oom:
                empty_cache(self._device or "cpu")
                if len(chunk) > 1:
                    self._batch_size = max(1, len(chunk) // 2)
                    continue  # retry the same items with half the batch
                out = [ScoreResult.failed(method, "out of memory at batch size 1")]
            except Exception:  # noqa: BLE001 - isolate the failing items
                out = [self._run_single(r) for r in chunk]
            results[i : i + len(chunk)] = out
            i += len(chunk)
        return [r for r in results if r is not None]

    def _run_single(self, request: ScoreRequest) -> ScoreResult:
        from .devices import empty_cache, oom_exceptions

        method = self.settings.method
        try:
            return self._run_batch([request])[0]
        except JudgeError:
            raise
        except oom_exceptions():
            empty_cache(self._device or "cpu")
            return ScoreResult.failed(method, "out of memory at batch size 1")
        except Exception as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"
            if self._folder is not None:
                reason = reason.replace(str(self._folder), self._display or "<checkpoint>")
            return ScoreResult.failed(method, reason[:500])

    @staticmethod
    def _to_pil(image: np.ndarray):
        from PIL import Image

        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise ValueError(f"image dtype {arr.dtype} is not uint8")
        if arr.ndim == 2:
            return Image.fromarray(arr, mode="L").convert("RGB")
        if arr.ndim == 3 and arr.shape[2] == 3:
            return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
        raise ValueError(f"image shape {arr.shape} is neither H x W nor H x W x 3")

    def _inputs(self, requests: Sequence[ScoreRequest]):
        import torch

        processor = self._processor
        texts, images = [], []
        for req in requests:
            system = req.system_prompt if req.system_prompt is not None else self.settings.system_prompt
            messages = []
            if system:
                messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
            messages.append(
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": req.prompt}]}
            )
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            images.append([self._to_pil(req.image)])
        batch = processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self._device)
                if value.is_floating_point():
                    value = value.to(self._dtype)
            inputs[key] = value
        return inputs

    def _forward(self, inputs: dict, hidden: bool):
        if self._simulate_oom is not None and self._simulate_oom(int(inputs["input_ids"].shape[0])):
            from .devices import SimulatedOOM

            raise SimulatedOOM("simulated CUDA out of memory")
        # every caller reads the last position's logits or the hidden states only: skip the
        # other positions' LM-head product (B x T x vocab) where the model supports it
        extra = {"logits_to_keep": 1} if self._keeps_logits else {}
        return self._model(**inputs, output_hidden_states=hidden, return_dict=True, **extra)

    def _run_batch(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        import torch

        with torch.inference_mode():
            return self._run_batch_inner(requests)

    def _run_batch_inner(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        import torch

        inputs = self._inputs(requests)
        want_embed = any(r.embed for r in requests)
        method = self.settings.method
        if method == "expected":
            out = self._forward(inputs, hidden=want_embed)
            results = self._expected(out.logits[:, -1, :])
        else:
            results = self._generate(inputs, len(requests))
            out = self._forward(inputs, hidden=True) if want_embed else None
        if want_embed and out is not None:
            mask = inputs["attention_mask"].to(torch.float32).unsqueeze(-1)
            last = out.hidden_states[-1].to(torch.float32)
            pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            image_pooled = self._image_embeddings(inputs, len(requests))
            for k, (req, res) in enumerate(zip(requests, results)):
                if req.embed and res.error is None:
                    res.embedding = pooled[k].detach().cpu().numpy().astype(np.float32)
                    res.image_embedding = image_pooled[k]
        return results

    def _expected(self, logits) -> list[ScoreResult]:
        import torch

        logits = logits.to(torch.float32)
        level_logits = torch.stack(
            [torch.logsumexp(logits[:, ids], dim=-1) for ids in self._level_ids], dim=-1
        )  # (B, 5)
        finite = torch.isfinite(level_logits).all(-1) & ~torch.isnan(logits).any(-1)
        probs = torch.softmax(level_logits, dim=-1)
        levels = torch.tensor(LEVELS, dtype=torch.float32, device=probs.device)
        scores = (probs * levels).sum(-1)
        out = []
        for k in range(logits.shape[0]):
            if not bool(finite[k]):
                out.append(ScoreResult.failed("expected", "non-finite logits"))
                continue
            p = probs[k].detach().cpu().tolist()
            out.append(ScoreResult(score=float(scores[k]), method="expected", probs=tuple(float(x) for x in p)))
        return out

    def _generate(self, inputs: dict, n: int) -> list[ScoreResult]:
        if self._simulate_oom is not None and self._simulate_oom(n):
            from .devices import SimulatedOOM

            raise SimulatedOOM("simulated CUDA out of memory")
        tokenizer = self._processor.tokenizer
        generated = self._model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=int(self.settings.max_new_tokens),
            pad_token_id=tokenizer.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        new = generated[:, inputs["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        out = []
        for text in texts:
            value = parse_rating(text)
            if value is None or not math.isfinite(value):
                out.append(ScoreResult(score=float("nan"), method="generate", parse_ok=False, raw_text=text))
            else:  # out-of-range values (e.g. 7/10) are kept; the properties flag them
                out.append(ScoreResult(score=float(value), method="generate", parse_ok=True, raw_text=text))
        return out

    def _image_embeddings(self, inputs: dict, n: int) -> list[np.ndarray | None]:
        """Projected vision-tower tokens of each sample's image, mean-pooled: float32 (E,)."""
        import inspect

        import torch

        model = self._model
        params = inspect.signature(model.get_image_features).parameters
        skip = {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"}
        kwargs = {k: v for k, v in inputs.items() if k in params and k not in skip}
        feats = model.get_image_features(**kwargs)
        pooled = getattr(feats, "pooler_output", None)
        if pooled is None:
            pooled = getattr(feats, "last_hidden_state", feats)
        if isinstance(pooled, (list, tuple)):
            flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in pooled], dim=0)
        else:
            flat = pooled.reshape(-1, pooled.shape[-1])
        flat = flat.to(torch.float32)
        # split the image tokens by sample: each sample holds as many placeholder tokens as features
        counts = None
        if self._image_token_id is not None:
            counts = (inputs["input_ids"] == self._image_token_id).sum(1).tolist()
            if sum(counts) != flat.shape[0] or 0 in counts:
                counts = None
        if counts is None:
            if isinstance(pooled, (list, tuple)) and len(pooled) == n:
                counts = [int(t.reshape(-1, t.shape[-1]).shape[0]) for t in pooled]
            elif flat.shape[0] % n == 0:
                counts = [flat.shape[0] // n] * n
            else:
                return [None] * n
        parts = torch.split(flat, counts, dim=0)
        return [p.mean(0).detach().cpu().numpy().astype(np.float32) for p in parts]
