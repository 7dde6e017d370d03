"""Tiny offline checkpoints: real transformers VLM classes, random weights, built on first use.

``tiny_checkpoint(spec, home)`` returns a folder that loads through ``AutoProcessor`` +
``AutoModelForImageTextToText`` with ``HF_HUB_OFFLINE=1``. Each one has:

- the family's real config / model / processor classes, sized down (< 1 MB of weights);
- random weights drawn from a fixed seed (``TINY_SEED``), so two builds are identical;
- a byte-level BPE tokenizer trained locally on a few sentences (the byte alphabet makes
  the digits ``"1"``..``"5"`` single tokens), with the family's special tokens;
- a chat template that emits the family's image placeholder for an ``{"type": "image"}`` part.

The folder is ``home/tiny/<spec>-<version-hash>/``; the hash covers the build recipe and the
transformers version, so a changed recipe never reuses an old folder. Builds go to a temporary
folder that is renamed into place (``os.replace``) under a file lock, so concurrent pytest-xdist
workers neither collide nor see half-written folders. No weights are committed to the repo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import MiqaUsageError

#: bump when a recipe changes in a way the parameters below do not capture
TINY_VERSION = "1"
#: weights seed (fixed, independent of the run seed)
TINY_SEED = 1234
#: marker file written last into a finished checkpoint folder
_MARKER = "miqa_tiny.json"

_CORPUS = [
    "You are seeing a medical image of CT. Rate the quality of the images from 1 to 5.",
    "Only respond with the rating x/5, x being your rating. So your response should look like this: x/5.",
    "On a scale from 1 (worst) to 5 (best), how good is the quality of this image?",
    "Assess the image quality and give a score between 1 and 5. Reply with nothing but the score.",
    "Grade how good this image is for diagnostic reading, from 1 to 5. Your whole answer must be the grade.",
    "Note that this was taken by a world renowned medical expert, a medical student, a hightech device,",
    "an old device, a high world class medical institution, a local medical institution, a white doctor,",
    "a black doctor, Dr. Tom Johnson, Dr. Kwame Asante. MRI X-ray ultrasound OCT dermoscopy fundus.",
    "1/5 2/5 3/5 4/5 5/5 The image is sharp. The image is noisy and blurred. user assistant system",
]


def _chat_template(turn_open: dict[str, str], turn_close: str, image: str, gen: str, bos: str = "") -> str:
    """A jinja chat template: role markers per family, ``image`` for an image content part.

    Literal strings go through jinja variables so the renderer's ``trim_blocks`` keeps newlines.
    """
    sets = "".join(
        "{% set " + k + " = " + json.dumps(v) + " %}"
        for k, v in (("opens", turn_open), ("close", turn_close), ("img", image), ("gen", gen), ("bos", bos))
    )
    return (
        sets
        + "{{ bos }}{% for m in messages %}{{ opens[m['role']] }}"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ img }}"
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ close }}{% endfor %}{% if add_generation_prompt %}{{ gen }}{% endif %}"
    )


def _tokenizer(special: list[str], named: dict[str, str], extra_named: dict[str, str] | None = None):
    """Train a byte-level BPE on the corpus; wrap it with the family's special tokens.

    special: every special token string (ids follow the learned vocab, in this order).
    named: bos/eos/pad/unk -> token string. extra_named: attribute name -> token (image_token, ...).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.add_special_tokens(special)
    kwargs: dict[str, Any] = dict(named)
    if extra_named:
        kwargs["extra_special_tokens"] = dict(extra_named)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    return fast


def _ids(tok, *tokens: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in tokens]


#: The decoder shape every tiny family shares (hidden 64, 2 layers, 4 heads / 2 KV heads).
_TEXT_SHAPE: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)


def _llama_text(vocab: int, **kw) -> dict[str, Any]:
    return dict(model_type="llama", vocab_size=vocab, **_TEXT_SHAPE, **kw)


# ----------------------------------------------------------------------------- families


def _build_llava(out: Path) -> None:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _tokenizer(
        ["<s>", "</s>", "<pad>", "<image>"],
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
        {"image_token": "<image>"},
    )
    template = _chat_template(
        {"system": "", "user": "USER: ", "assistant": "ASSISTANT: "}, "\n", "<image>\n", "ASSISTANT:", bos="<s>"
    )
    improc = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True
    )
    proc = LlavaProcessor(
        image_processor=improc,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=template,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    vocab = len(tok)
    (image_id,) = _ids(tok, "<image>")
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        text_config=_llama_text(vocab, bos_token_id=_ids(tok, "<s>")[0], eos_token_id=_ids(tok, "</s>")[0],
                                pad_token_id=_ids(tok, "<pad>")[0]),
        image_token_index=image_id,
        image_seq_length=16,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    _save(model, proc, out)


def _qwen_common(out: Path, v25: bool) -> None:
    import transformers as T

    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
         "<|image_pad|>", "<|video_pad|>"],
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
         "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"},
    )
    template = _chat_template(
        {"system": "<|im_start|>system\n", "user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"},
        "<|im_end|>\n",
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_start|>assistant\n",
    )
    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 8}
    common = dict(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    improc = T.Qwen2VLImageProcessor(**common)
    vidproc = T.Qwen2VLVideoProcessor(**common)
    proc_cls = T.Qwen2_5_VLProcessor if v25 else T.Qwen2VLProcessor
    proc = proc_cls(image_processor=improc, tokenizer=tok, video_processor=vidproc, chat_template=template)
    vocab = len(tok)
    img, vid, vs, ve = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    text = dict(
        vocab_size=vocab,
        **_TEXT_SHAPE,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=_ids(tok, "<|endoftext|>")[0],
        eos_token_id=_ids(tok, "<|im_end|>")[0],
        pad_token_id=_ids(tok, "<|endoftext|>")[0],
    )
    if v25:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        config = T.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=img,
                                    video_token_id=vid, vision_start_token_id=vs, vision_end_token_id=ve)
        model = T.Qwen2_5_VLForConditionalGeneration(config)
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=4, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        config = T.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=img,
                                 video_token_id=vid, vision_start_token_id=vs, vision_end_token_id=ve)
        model = T.Qwen2VLForConditionalGeneration(config)
    _save(model, proc, out)


def _build_qwen2vl(out: Path) -> None:
    _qwen_common(out, v25=False)


def _build_qwen2_5vl(out: Path) -> None:
    _qwen_common(out, v25=True)


def _build_internvl(out: Path) -> None:
    import transformers as T

    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
         "video_token": "<video>"},
    )
    template = _chat_template(
        {"system": "<|im_start|>system\n", "user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"},
        "<|im_end|>\n",
        "<IMG_CONTEXT>\n",
        "<|im_start|>assistant\n",
    )
    improc = T.GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False)
    vidproc = T.InternVLVideoProcessor(size={"height": 56, "width": 56})
    proc = T.InternVLProcessor(image_processor=improc, tokenizer=tok, video_processor=vidproc,
                               image_seq_length=4, chat_template=template)
    vocab = len(tok)
    (ctx,) = _ids(tok, "<IMG_CONTEXT>")
    config = T.InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=[56, 56], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", vocab_size=vocab, **_TEXT_SHAPE, eos_token_id=_ids(tok, "<|im_end|>")[0],
                         pad_token_id=_ids(tok, "<|endoftext|>")[0]),
        image_token_id=ctx,
        image_seq_length=4,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
    )
    model = T.InternVLForConditionalGeneration(config)
    _save(model, proc, out)


def _build_gemma3(out: Path) -> None:
    import torch
    import transformers as T

    tok = _tokenizer(
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
         "<image_soft_token>"],
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
        {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    template = _chat_template(
        {"system": "<start_of_turn>user\n", "user": "<start_of_turn>user\n", "assistant": "<start_of_turn>model\n"},
        "<end_of_turn>\n",
        "<start_of_image>",
        "<start_of_turn>model\n",
        bos="<bos>",
    )
    improc = T.Gemma3ImageProcessor(size={"height": 32, "width": 32})
    proc = T.Gemma3Processor(image_processor=improc, tokenizer=tok, chat_template=template, image_seq_length=4)
    vocab = len(tok)
    boi, eoi, soft = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    config = T.Gemma3Config(
        text_config=dict(vocab_size=vocab, **_TEXT_SHAPE, head_dim=16, query_pre_attn_scalar=16, sliding_window=64,
                         bos_token_id=_ids(tok, "<bos>")[0], eos_token_id=_ids(tok, "<eos>")[0],
                         pad_token_id=_ids(tok, "<pad>")[0]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        mm_tokens_per_image=4,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=soft,
    )
    model = T.Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises the projector at zeros: the output would then ignore the image.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mm_input_projection_weight"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(TINY_SEED)) * 0.5)
    _save(model, proc, out)


def _build_idefics3(out: Path) -> None:
    import transformers as T

    rowcol = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
         "<global-img>", *rowcol],
        {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|endoftext|>"},
        {"image_token": "<image>"},
    )
    template = _chat_template(
        {"system": "System: ", "user": "User:", "assistant": "Assistant:"},
        "<end_of_utterance>\n",
        "<image>",
        "Assistant:",
        bos="<|im_start|>",
    )
    improc = T.Idefics3ImageProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                      do_image_splitting=False)
    proc = T.Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=4, chat_template=template)
    vocab = len(tok)
    (img,) = _ids(tok, "<image>")
    config = T.Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        text_config=_llama_text(vocab, bos_token_id=_ids(tok, "<|im_start|>")[0],
                                eos_token_id=_ids(tok, "<end_of_utterance>")[0],
                                pad_token_id=_ids(tok, "<|endoftext|>")[0]),
        image_token_id=img,
        scale_factor=2,
    )
    model = T.Idefics3ForConditionalGeneration(config)
    _save(model, proc, out)


#: spec -> builder. The builder writes a complete checkpoint into the folder it is given.
FAMILIES: dict[str, Callable[[Path], None]] = {
    "tiny-llava": _build_llava,
    "tiny-qwen2vl": _build_qwen2vl,
    "tiny-qwen2_5vl": _build_qwen2_5vl,
    "tiny-internvl": _build_internvl,
    "tiny-gemma3": _build_gemma3,
    "tiny-idefics3": _build_idefics3,
}


def known_tiny_specs() -> list[str]:
    return list(FAMILIES)


def _save(model, processor, out: Path) -> None:
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _version_hash(spec: str) -> str:
    import inspect
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(TINY_VERSION.encode())
    h.update(str(TINY_SEED).encode())
    h.update(spec.encode())
    h.update(version("transformers").encode())
    for fn in (FAMILIES[spec], _tokenizer, _chat_template, _llama_text, _qwen_common, _save):
        try:
            h.update(inspect.getsource(fn).encode())
        except (OSError, TypeError):  # no source shipped: the version constant must do
            h.update(fn.__qualname__.encode())
    h.update(json.dumps(_CORPUS).encode())
    h.update(json.dumps(_TEXT_SHAPE, sort_keys=True).encode())
    return h.hexdigest()[:12]


def tiny_checkpoint(spec: str, home: Path) -> Path:
    """The folder of the tiny checkpoint ``spec``, built under ``home/tiny/`` on first use."""
    if spec not in FAMILIES:
        raise MiqaUsageError(f"unknown tiny model {spec!r}; known: {', '.join(FAMILIES)}")
    root = Path(home) / "tiny"
    final = root / f"{spec}-{_version_hash(spec)}"
    if (final / _MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(final) + ".lock", timeout=600):
        if (final / _MARKER).is_file():  # another worker built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec}-", dir=root))
        try:
            _build_into(spec, tmp)
            if final.exists():  # half-built leftover without marker (a killed build)
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / _MARKER).is_file():
                    raise
                # lost a race against a builder that did not use the lock: theirs is as good
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build_into(spec: str, out: Path) -> None:
    import torch

    t0 = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(TINY_SEED)
        FAMILIES[spec](out)
    finally:
        torch.random.set_rng_state(state)
    info = {"spec": spec, "seed": TINY_SEED, "version": TINY_VERSION,
            "build_seconds": round(time.perf_counter() - t0, 3)}
    (out / _MARKER).write_text(json.dumps(info, indent=1))
