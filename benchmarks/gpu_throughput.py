"""GPU throughput of ``expected`` scoring on shape-faithful random-weight models, against the FLOP bound.

    python -m benchmarks.gpu_throughput [--models qwen2_5vl_3b,gemma3_4b] [--batch-sizes 1,2,4,8,16,32,64]
                                        [--iters 5] [--peak-tflops T] [--json reports/gpu_throughput.json]
    python -m benchmarks.gpu_throughput --smoke      # tiny shapes, CPU, float32: checks the script, seconds

Models (random weights, bfloat16, built on the GPU from the published architectures' configs, written
out below because the hub is unreachable): Qwen2.5-VL-3B-Instruct and a Gemma 3 4B (MedGemma 4B)
shape. No processor is used: the inputs are built exactly as the processors build them for one
224 x 224 image and the ~60-token rating prompt:

- Qwen2.5-VL: 224 / 14 = 16 x 16 = 256 patches (``pixel_values`` 256 x 1176, ``image_grid_thw``
  [1, 16, 16]), merged 2 x 2 into 64 image tokens between ``<|vision_start|>`` / ``<|vision_end|>``;
- Gemma 3: the image is resized to 896 x 896 (64 x 64 = 4096 SigLIP patches), pooled to 256 image
  tokens between ``<start_of_image>`` / ``<end_of_image>``.

Whole pipeline (``measure_pipeline``, after the model-only sweep, at its best batch size): the
engine on a MediMeta-C-like root (7 datasets x 40 images of 224 x 224 RGB made from the samples;
smoke: 2 x 4) with the full condition mix of the audit matrix (every corruption and severity,
attribute and paraphrase prompts, repeats), condition images and the resize to the model's input
size made in the preparation pool, the model as a judge (``ShapeJudge``: normalise and patch on
the device, one forward pass), results stored batch by batch. Reported: images/s through the
pipeline, its fraction of the FLOP bound, and the device's idle share (1 - synchronised forward
time / wall).

``expected`` scoring is one forward pass over the batch, as ``TransformersJudge`` does it (LM head
on the last position only: ``logits_to_keep=1``; softmax of the last logits). Images/second = batch x iterations / time
(CUDA-synchronised, after warm-up), for each batch size until out-of-memory.

FLOP-bound estimate (stated by the script for each model):

    FLOPs per image = 2 x (decoder params without the embedding table) x T        (T: tokens per image)
                    + 2 x (lm_head params) x 1                                   (last position only, as the judge)
                    + 2 x (vision tower + projector params) x P                  (P: vision patches per image)
    bound images/s  = peak dense bf16 FLOP/s / FLOPs per image

i.e. the issue's 2 x params x tokens per image, with each part of the model counted on the tokens it
sees (attention's quadratic term is left out: under 5 % at these lengths, so the bound is slightly
optimistic). Peak bf16 dense: H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, H100 NVL 835, A100 312,
L40S 362, L4 121 (``--peak-tflops`` overrides). Goal: at least 50 % of the bound at the best batch size.
The device (name, capability, memory, torch / CUDA versions) is recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from miqa_checks.judges.base import Judge

GOAL_FRACTION = 0.5
PROMPT_TOKENS = 60  # "You are seeing a medical image of CT. Rate the quality ..." + chat markers, about 60 tokens

#: dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16 = [
    ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("RTX 4090", 165e12),
]

# Qwen/Qwen2.5-VL-3B-Instruct config.json (published values)
QWEN2_5_VL_3B = dict(
    text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
              num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
              tie_word_embeddings=True, hidden_act="silu",
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
              bos_token_id=151643, eos_token_id=151645),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31], in_channels=3, hidden_act="silu"),
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    image_size=224,
)
QWEN_SMOKE = dict(
    text=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
              bos_token_id=1, eos_token_id=2),
    vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
    image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503,
    image_size=56,
)

# google/gemma-3-4b-it (= MedGemma 4B shape) config.json (published values; rope scaling left at defaults:
# it changes no FLOP)
GEMMA3_4B = dict(
    text=dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
              num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
              sliding_window=1024, max_position_embeddings=131072, rms_norm_eps=1e-6,
              bos_token_id=2, eos_token_id=1, pad_token_id=0),
    vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                image_size=896, patch_size=14),
    mm_tokens_per_image=256, boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
)
GEMMA_SMOKE = dict(
    text=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=64,
              max_position_embeddings=4096, bos_token_id=2, eos_token_id=1, pad_token_id=0),
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
    mm_tokens_per_image=4, boi_token_index=500, eoi_token_index=501, image_token_index=502,
)


def _build_qwen(shape: dict, dtype, device):
    import torch
    import transformers as T

    config = T.Qwen2_5_VLConfig(text_config=shape["text"], vision_config=shape["vision"],
                                image_token_id=shape["image_token_id"], video_token_id=shape["video_token_id"],
                                vision_start_token_id=shape["vision_start_token_id"],
                                vision_end_token_id=shape["vision_end_token_id"])
    with torch.device(device):
        model = T.Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval()
    v = shape["vision"]
    side = shape["image_size"] // v["patch_size"]
    patches = side * side
    image_tokens = patches // (v["spatial_merge_size"] ** 2)
    patch_dim = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2
    vocab = shape["text"]["vocab_size"]

    def inputs(batch: int, gen) -> dict:
        ids = []
        for _ in range(batch):
            hi = min(vocab, shape["vision_start_token_id"], shape["image_token_id"], shape["text"]["bos_token_id"] + 10**9) - 1
            prompt = torch.randint(10, hi, (PROMPT_TOKENS,), generator=gen).tolist()
            ids.append(prompt[:5] + [shape["vision_start_token_id"]] + [shape["image_token_id"]] * image_tokens
                       + [shape["vision_end_token_id"]] + prompt[5:])
        input_ids = torch.tensor(ids, device=device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(batch * patches, patch_dim, generator=gen).to(device=device, dtype=dtype),
            "image_grid_thw": torch.tensor([[1, side, side]] * batch, device=device),
        }

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)
    ps, tp = v["patch_size"], v["temporal_patch_size"]

    def pixels(images) -> Any:
        """uint8 (B, S, S, 3) at the input size -> ``pixel_values`` (B x patches, patch_dim), as the
        processor lays them out (normalised, each frame repeated over the temporal patch)."""
        x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        b = x.shape[0]
        x = x.reshape(b, 3, side, ps, side, ps).permute(0, 2, 4, 1, 3, 5).reshape(b * patches, 3, 1, ps, ps)
        return x.expand(-1, -1, tp, -1, -1).reshape(b * patches, patch_dim).to(dtype)

    return model, inputs, {"tokens_per_image": PROMPT_TOKENS + image_tokens + 2, "vision_patches": patches,
                           "vision_prefix": "model.visual", "side": shape["image_size"], "pixels": pixels}


def _build_gemma(shape: dict, dtype, device):
    import torch
    import transformers as T

    config = T.Gemma3Config(text_config=shape["text"], vision_config=shape["vision"],
                            mm_tokens_per_image=shape["mm_tokens_per_image"], boi_token_index=shape["boi_token_index"],
                            eoi_token_index=shape["eoi_token_index"], image_token_index=shape["image_token_index"])
    with torch.device(device):
        model = T.Gemma3ForConditionalGeneration(config).to(dtype).eval()
    v = shape["vision"]
    size = v["image_size"]
    patches = (size // v["patch_size"]) ** 2
    n_img = shape["mm_tokens_per_image"]
    vocab = shape["text"]["vocab_size"]

    def inputs(batch: int, gen) -> dict:
        ids, types = [], []
        for _ in range(batch):
            hi = min(vocab, shape["boi_token_index"], shape["image_token_index"]) - 1
            prompt = torch.randint(10, hi, (PROMPT_TOKENS,), generator=gen).tolist()
            row = [shape["text"]["bos_token_id"]] + prompt[:5] + [shape["boi_token_index"]] + [shape["image_token_index"]] * n_img \
                + [shape["eoi_token_index"]] + prompt[5:]
            ids.append(row)
            types.append([1 if t == shape["image_token_index"] else 0 for t in row])
        input_ids = torch.tensor(ids, device=device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.tensor(types, device=device),
            "pixel_values": torch.randn(batch, 3, size, size, generator=gen).to(device=device, dtype=dtype),
        }

    def pixels(images) -> Any:
        """uint8 (B, S, S, 3) at the input size -> ``pixel_values`` (B, 3, S, S), normalised to [-1, 1]."""
        x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return x.to(dtype)

    return model, inputs, {"tokens_per_image": PROMPT_TOKENS + n_img + 3, "vision_patches": patches,
                           "vision_prefix": ("model.vision_tower", "model.multi_modal_projector"), "side": size,
                           "pixels": pixels}


MODELS = {"qwen2_5vl_3b": (_build_qwen, QWEN2_5_VL_3B, QWEN_SMOKE), "gemma3_4b": (_build_gemma, GEMMA3_4B, GEMMA_SMOKE)}


def flop_budget(model, info: dict) -> dict[str, Any]:
    """Parameter counts by part and the FLOPs per image of one ``expected`` forward pass."""
    prefixes = info["vision_prefix"]
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    vision = embed = lm_head = text = 0
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        n = p.numel()
        if name.startswith(prefixes):
            vision += n
        elif "embed_tokens" in name:
            embed += n
        elif name.startswith("lm_head"):
            lm_head += n
        elif id(p) not in seen:
            text += n
        seen.add(id(p))
    if lm_head == 0:  # tied: the head is the embedding matrix (named_parameters may hide it)
        lm_head = embed
    T, P = info["tokens_per_image"], info["vision_patches"]
    flops = 2 * text * T + 2 * lm_head * 1 + 2 * vision * P
    total = sum(p.numel() for p in model.parameters())
    return {"params_total": total, "params_decoder_no_embed": text, "params_lm_head": lm_head, "params_vision": vision,
            "tokens_per_image": T, "vision_patches": P, "flops_per_image": flops,
            "simple_2_params_tokens": 2 * total * T,
            "arithmetic": f"2 x {text:.4g} x {T} + 2 x {lm_head:.4g} x 1 + 2 x {vision:.4g} x {P} "
                          f"= {flops / 1e12:.4g} TFLOP per image"}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, value in PEAK_BF16:
        if key in device_name:
            return value
    return None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_model(name: str, *, smoke: bool, device: str, dtype, batch_sizes: Sequence[int], iters: int) -> dict[str, Any]:
    import torch

    builder, full, tiny = MODELS[name]
    shape = tiny if smoke else full
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, make_inputs, info = builder(shape, dtype, device)
    build_s = time.perf_counter() - t0
    budget = flop_budget(model, info)
    gen = torch.Generator().manual_seed(0)
    results = []
    for bs in batch_sizes:
        try:
            inputs = make_inputs(bs, gen)
            with torch.inference_mode():
                for _ in range(2):  # warm-up: kernels, allocator
                    model(**inputs, return_dict=True, logits_to_keep=1)
                _sync(device)
                start = time.perf_counter()
                for _ in range(iters):
                    out = model(**inputs, return_dict=True, logits_to_keep=1)
                    out.logits[:, -1, :].float().softmax(-1)
                _sync(device)
                elapsed = time.perf_counter() - start
            results.append({"batch": bs, "seconds": elapsed, "images_per_s": bs * iters / elapsed})
            del inputs, out
        except torch.OutOfMemoryError:
            results.append({"batch": bs, "oom": True})
            break
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    ok = [r for r in results if not r.get("oom")]
    best = max(ok, key=lambda r: r["images_per_s"]) if ok else None
    return {"model": name, "smoke": smoke, "build_s": build_s, "budget": budget, "results": results, "best": best}


def resize_rgb(image: Any, side: int) -> Any:
    """uint8 H x W (x 3) -> uint8 side x side x 3, bilinear (the processor's resize; grey stacked)."""
    import numpy as np
    from PIL import Image

    rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    if rgb.shape[:2] == (side, side):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR))


class ShapeJudge(Judge):
    """A shape-faithful random-weight model as a judge, for the whole pipeline: the image is resized
    to the model's input size in the engine's preparation pool (``prepare_input``), normalised and
    cut into patches on the device, and scored in one forward pass (``expected``: P(level 1..5)
    from the last position's logits). ``busy_s``: device time (synchronised) inside ``score``."""

    def __init__(self, name: str, model: Any, make_inputs: Any, info: dict, device: str, batch: int) -> None:
        import functools

        import torch

        self.spec = f"bench/{name}-shape"
        self.model, self.make_inputs, self.info, self.device = model, make_inputs, info, device
        self.batch = batch
        self.busy_s = 0.0
        self.prepare_input = functools.partial(resize_rgb, side=info["side"])
        self._ids: dict[int, dict] = {}
        self._gen = torch.Generator().manual_seed(0)
        self._levels = torch.arange(10, 15, device=device)  # five token ids standing for "1".."5"

    @property
    def default_batch_size(self) -> int:
        return self.batch

    def identity(self) -> str:
        return f"{self.spec} random weights seed 0"

    def _inputs(self, n: int) -> dict:
        if n not in self._ids:
            built = self.make_inputs(n, self._gen)
            built.pop("pixel_values")
            self._ids[n] = built
        return self._ids[n]

    def score(self, requests: Sequence[Any]) -> list[Any]:
        import numpy as np
        import torch

        from miqa_checks.records import ScoreResult

        pixels = np.stack([r.judge_input if r.judge_input is not None else self.prepare_input(r.image) for r in requests])
        inputs = {**self._inputs(len(requests)), "pixel_values": self.info["pixels"](pixels)}
        _sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model(**inputs, return_dict=True, logits_to_keep=1)
            probs = out.logits[:, -1, self._levels].float().softmax(-1).cpu().numpy()
        _sync(self.device)
        self.busy_s += time.perf_counter() - start
        levels = np.arange(1.0, 6.0)
        return [ScoreResult(score=float(p @ levels), method="expected", probs=tuple(float(x) for x in p)) for p in probs]


def build_root(root: Path, datasets: int, images: int) -> list[str]:
    """A MediMeta-C-like root (``<root>/<dataset>/test/clean.npz``, 224 x 224 RGB uint8) made from
    the embedded samples; returns the dataset ids."""
    import numpy as np

    from miqa_checks.data import load_all

    from .bench_corruptions import as_rgb224

    names = ("aml", "pbc", "fundus", "mammo_calc", "mammo_mass", "oct", "pneumonia")[:datasets]
    pool = as_rgb224([r.image for d in load_all(["samples"], max_images=None, seed=0) for r in d.records])
    for k, name in enumerate(names):
        folder = root / name / "test"
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.stack([pool[(k * images + i) % len(pool)] for i in range(images)])
        np.savez(folder / "clean.npz", images=arr, labels=np.arange(images))
    return list(names)


def measure_pipeline(name: str, *, smoke: bool, device: str, dtype: Any, batch: int, images: int, datasets: int) -> dict[str, Any]:
    """The whole pipeline (data, planning, the full condition mix made in the preparation pool,
    the model, the result store) on one model: images/s and the device's idle share."""
    import shutil
    import tempfile

    import torch

    from miqa_checks.engine.store import ResultStore
    from miqa_checks.config import resolve_settings
    from miqa_checks.data import resolve_source
    from miqa_checks.engine import Engine
    from miqa_checks.matrix import plan_cells

    builder, full, tiny = MODELS[name]
    torch.manual_seed(0)
    model, make_inputs, info = builder(tiny if smoke else full, dtype, device)
    judge = ShapeJudge(name, model, make_inputs, info, device, batch)
    tmp = Path(tempfile.mkdtemp(prefix="miqa-gpu-pipeline-"))
    try:
        build_root(tmp / "data", datasets, images)
        settings = resolve_settings({"model": [judge.spec], "data": [str(tmp / "data")], "cache": str(tmp / "store"),
                                     "batch_size": batch, "max_images": images})
        names = [pair for spec in settings.data for pair in resolve_source(spec).dataset_names()]
        engine = Engine(settings, store=ResultStore(tmp / "store", "gpu"), progress=False)
        engine.models.judges[judge.spec] = judge
        cells = plan_cells([judge.spec], names, with_baseline=False)
        engine.image_ids(names[0][0])  # load the data before the clock starts
        start = time.perf_counter()
        engine.prepare(cells)
        wall = time.perf_counter() - start
        out = {"model": name, "smoke": smoke, "requests": engine.inferred, "wall_s": wall, "busy_s": judge.busy_s,
               "images_per_s": engine.inferred / wall, "device_idle_share": 1.0 - judge.busy_s / wall,
               "device_images_per_s": engine.inferred / judge.busy_s if judge.busy_s else None,
               "preparation": engine.preparation, "batch": batch, "datasets": len(names), "images_per_dataset": images}
        engine.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def check_configs() -> dict[str, Any]:
    """Build the full-size models on the ``meta`` device (no memory): parameter counts and FLOP budgets."""
    import torch

    out = {}
    for name, (builder, full, _) in MODELS.items():
        model, _, info = builder(full, torch.bfloat16, "meta")
        out[name] = flop_budget(model, info)
    return out


def device_info(device: str) -> dict[str, Any]:
    import platform

    import torch

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda)
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def run(*, smoke: bool, models: Sequence[str] = tuple(MODELS), batch_sizes: Sequence[int] | None = None, iters: int | None = None,
        peak_tflops: float | None = None, pipeline: bool = True) -> dict[str, Any]:
    import torch

    device = "cuda" if (torch.cuda.is_available() and not smoke) else "cpu"
    if not smoke and device != "cuda":
        raise SystemExit("no CUDA device: run with --smoke on a CPU")
    if device == "cpu":
        torch.set_num_threads(1)  # tiny shapes: more threads only wait at OpenMP barriers (see benchmarks/README.md)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    batch_sizes = batch_sizes or ((1, 2, 4) if smoke else (1, 2, 4, 8, 16, 32, 64))
    iters = iters or (2 if smoke else 5)
    dev = device_info(device)
    peak = None if smoke else peak_flops(dev.get("name", ""), peak_tflops)
    out = {"device": dev, "dtype": str(dtype).replace("torch.", ""), "peak_flops": peak, "goal_fraction": GOAL_FRACTION, "models": []}
    for name in models:
        m = measure_model(name, smoke=smoke, device=device, dtype=dtype, batch_sizes=batch_sizes, iters=iters)
        if pipeline and m["best"]:
            m["pipeline"] = measure_pipeline(name, smoke=smoke, device=device, dtype=dtype, batch=m["best"]["batch"],
                                             images=4 if smoke else 40, datasets=2 if smoke else 7)
        if peak and m["best"]:
            bound = peak / m["budget"]["flops_per_image"]
            m["bound_images_per_s"] = bound
            m["fraction_of_bound"] = m["best"]["images_per_s"] / bound
            m["goal_met"] = m["fraction_of_bound"] >= GOAL_FRACTION
            if "pipeline" in m:
                m["pipeline"]["fraction_of_bound"] = m["pipeline"]["images_per_s"] / bound
        out["models"].append(m)
    return out


def format_text(out: dict[str, Any]) -> str:
    lines = [f"device: {out['device']}; dtype {out['dtype']}; peak {out['peak_flops'] or 'n/a (smoke / unknown GPU)'}"]
    for m in out["models"]:
        b = m["budget"]
        lines.append(f"{m['model']}{' (smoke shapes)' if m['smoke'] else ''}: {b['params_total']:.4g} params; {b['arithmetic']}")
        for r in m["results"]:
            lines.append(f"  batch {r['batch']:>3}: " + ("out of memory" if r.get("oom") else f"{r['images_per_s']:.1f} images/s"))
        if "pipeline" in m:
            p = m["pipeline"]
            lines.append(f"  whole pipeline ({p['requests']} requests, {p['datasets']} datasets x {p['images_per_dataset']} images, "
                         f"full condition mix, batch {p['batch']}, preparation: {p['preparation']}): "
                         f"{p['images_per_s']:.1f} images/s; device idle {100 * p['device_idle_share']:.1f} %"
                         + (f"; {100 * p['fraction_of_bound']:.1f} % of bound" if "fraction_of_bound" in p else ""))
        if "bound_images_per_s" in m:
            lines.append(f"  best {m['best']['images_per_s']:.1f} images/s at batch {m['best']['batch']}; bound "
                         f"{m['bound_images_per_s']:.1f} images/s; {100 * m['fraction_of_bound']:.1f} % of bound "
                         f"(goal >= {100 * GOAL_FRACTION:.0f} %: {'met' if m['goal_met'] else 'NOT met'})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (float32): checks the script")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 1..64 doubling; smoke 1,2,4)")
    parser.add_argument("--iters", type=int, default=None, help="timed forward passes per batch size (default 5; smoke 2)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, TFLOP/s")
    parser.add_argument("--check-configs", action="store_true",
                        help="build the full-size models on the meta device and print their FLOP budgets (no GPU, seconds)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.check_configs:
        budgets = check_configs()
        for name, b in budgets.items():
            print(f"{name}: {b['params_total']:.4g} params; {b['arithmetic']}")
        return {"budgets": budgets}
    sizes = [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else None
    out = run(smoke=args.smoke, models=args.models.split(","), batch_sizes=sizes, iters=args.iters, peak_tflops=args.peak_tflops)
    print(format_text(out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


if __name__ == "__main__":
    main()
