"""Save and load embedding models with their config and whitening; a content hash that names a model.

A saved model is one torch file (local path or any fsspec URL such as s3://bucket/key) holding only
tensors, dicts, lists and plain values, so `torch.load(..., weights_only=True)` reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings

import fsspec
import torch
from pydantic import ValidationError

from ..whitening import PCAWhitening
from .config import ModelConfig
from .embedding import EmbeddingModel, build_model

FORMAT = "sare-model"
FORMAT_VERSION = 1


def model_hash(model: EmbeddingModel) -> str:
    """sha256 (hex, first 16 chars) of the config and every tensor in the state dict, in key order."""
    digest = hashlib.sha256(json.dumps(model.config.model_dump(), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_payload(model: EmbeddingModel, metadata: dict | None = None) -> dict:
    """The dict that `save_model` writes (also embeddable in a training checkpoint)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # layout-free on disk
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.model_dump(mode="json"),
        "whitening_shape": list(model.whitening.projection.shape) if model.whitening is not None else None,
        "state_dict": state,
        "model_hash": model_hash(model),
        "metadata": dict(metadata or {}),
    }


def model_from_payload(payload: dict, source: str = "payload") -> EmbeddingModel:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{source}: not a saved SARE model (format field missing or not {FORMAT!r})")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{source}: saved with format version {payload['format_version']}, this code reads "
                         f"up to {FORMAT_VERSION}")
    try:
        config = ModelConfig(**payload["config"])
    except (ValidationError, KeyError, TypeError) as exc:
        raise ValueError(f"{source}: field 'config' is not a valid model config ({_first_line(exc)})") from None
    model = build_model(config, load_weights=False)
    shape = payload.get("whitening_shape")
    if shape:
        model.set_whitening(PCAWhitening(torch.zeros(shape[0]), torch.zeros(shape[0], shape[1])))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError) as exc:
        mismatches = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ValueError(f"{source}: field 'state_dict' does not fit field 'config' ("
                         f"{mismatches[0] if mismatches else _first_line(exc)}"
                         + (f"; {len(mismatches) - 1} more" if len(mismatches) > 1 else "") + ")") from None
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def save_model(path: str, model: EmbeddingModel, metadata: dict | None = None) -> str:
    """Write the model to `path` (local or fsspec URL); returns its model hash."""
    payload = model_payload(model, metadata)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with fsspec.open(path, "wb") as f:
        f.write(buffer.getvalue())
    return payload["model_hash"]


def load_model(path: str, map_location: str | torch.device = "cpu") -> EmbeddingModel:
    """Read a model written by `save_model` (weights_only loading; no pretrained weights are fetched)."""
    with fsspec.open(path, "rb") as f:
        data = f.read()
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        reason = _first_line(exc).split(". ")[0][:200]
        raise ValueError(f"{path}: refused by torch.load(weights_only=True): not a saved SARE model of tensors "
                         f"and plain values ({reason})") from None
    model = model_from_payload(payload, source=str(path))
    model.metadata = payload.get("metadata", {})
    return model
