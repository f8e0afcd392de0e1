"""A sweep's results from Tune's ResultGrid: one row per trial (sorted by the metric of its best epoch) and
one per reported epoch, the Markdown table, the Parquet tables and the best configuration as a training YAML.

Every recall in them was computed from the epoch's validation descriptor store (see sare_core.training.validation)."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np

from sare_core.config_io import dump_config
from sare_core.paths import write_bytes, write_text
from sare_core.training.checkpoint import checkpoints_by_epoch, read_checkpoint
from sare_core.training.config import TrainConfig
from sare_core.training.validation import val_store_uri

from .config import SweepConfig


def plain(value):
    """A JSON/Parquet friendly scalar."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def label(value) -> str:
    """A parameter value as a short label (tables, plot axes)."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _epoch_rows(result, trial: str) -> list[dict]:
    frame = result.metrics_dataframe
    if frame is None or len(frame) == 0 or "epoch" not in frame:
        return []
    rows: dict[int, dict] = {}
    for record in frame.to_dict("records"):  # a restarted trial reports epochs again: keep the last
        if record.get("epoch") is None or (
            isinstance(record["epoch"], float) and math.isnan(record["epoch"])
        ):
            continue
        epoch = int(record["epoch"])
        keep = {k: record.get(k) for k in record if k.startswith("val_recall@")}
        keep.update(
            trial=trial,
            epoch=epoch,
            loss=record.get("loss"),
            val_store=record.get("val_store"),
            checkpoint=record.get("checkpoint_path")
            if isinstance(record.get("checkpoint_path"), str)
            else None,
        )
        rows[epoch] = {k: plain(v) for k, v in keep.items()}
    return [rows[e] for e in sorted(rows)]


def _with_checkpoint_history(rows: list[dict], trial_dir: str, trial: str) -> list[dict]:
    """`rows` completed from the trial's training checkpoint: a trial Tune restored from a checkpoint
    reports only the epochs it ran after the restore, while the checkpoint's history holds every epoch's
    validation recalls (their stores are `trial_dir`/val/epoch_EEE). Only gaps before the last reported
    epoch are filled: epochs a stopped trial finished after its last report never reached the scheduler."""
    have = {r["epoch"] for r in rows}
    if not have or set(range(max(have) + 1)) <= have:
        return rows
    checkpoints = checkpoints_by_epoch(f"{trial_dir}/train")
    if not checkpoints:
        return rows
    history = read_checkpoint(checkpoints[max(checkpoints)]).get("history", [])
    filled = {r["epoch"]: r for r in rows}
    for record in history:
        epoch = int(record["epoch"])
        if epoch in filled or epoch > max(have):
            continue
        loss = record.get("loss")
        filled[epoch] = {
            **{k: plain(v) for k, v in record.items() if k.startswith("val_recall@")},
            "trial": trial,
            "epoch": epoch,
            "loss": None if loss is None or (isinstance(loss, float) and math.isnan(loss)) else plain(loss),
            "val_store": val_store_uri(f"{trial_dir}/val", epoch),
            "checkpoint": checkpoints.get(epoch),
        }
    return [filled[e] for e in sorted(filled)]


def collect(config: SweepConfig, results) -> tuple[list[dict], list[dict]]:
    """(trial rows, epoch rows) from Tune's ResultGrid."""
    trials, epochs = [], []
    for result in results:
        name = os.path.basename(str(result.path).rstrip("/"))
        params = config.decode(result.config or {})
        planned = TrainConfig(**{**config.train_dict(params), "name": "x"}).epochs
        rows = _with_checkpoint_history(_epoch_rows(result, name), f"{config.sweep_dir}/{name}", name)
        epochs += rows
        trained = [r for r in rows if r["epoch"] >= 1 and r.get(config.metric) is not None]
        pick = max if config.mode == "max" else min  # the first of equal epochs
        best = pick(trained, key=lambda r: r[config.metric]) if trained else None
        done = max((r["epoch"] for r in rows), default=-1)
        status = "error" if result.error else ("completed" if done >= planned else "stopped early")
        row = {
            "trial": name,
            "status": status,
            "epochs_done": max(done, 0),
            "epochs": planned,
            "error": str(result.error).splitlines()[0][:300] if result.error else None,
        }
        row.update({f"param:{k}": plain(v) for k, v in params.items()})
        row.update(
            {
                "metric": config.metric,
                "value": best[config.metric] if best else None,
                "best_epoch": best["epoch"] if best else None,
                "val_store": best["val_store"] if best else None,
                "checkpoint": best["checkpoint"] if best else None,
                "trial_dir": f"{config.sweep_dir}/{name}",
            }
        )
        row.update({k: v for k, v in (best or {}).items() if k.startswith("val_recall@")})
        row["_params"] = params
        trials.append(row)

    def key(row):
        value = row["value"]
        missing = value is None
        return (missing, -(value or 0) if config.mode == "max" else (value or 0), row["trial"])

    trials.sort(key=key)
    for rank, row in enumerate(trials, 1):
        row["rank"] = rank
    return trials, epochs


def markdown_table(config: SweepConfig, trials: list[dict]) -> str:
    """The results table: a row per trial with its parameters, the metric of its best epoch, that epoch's
    other recalls and the finalised trials' recalls (percent)."""
    keys = list(config.search_space)
    recall_cols = sorted(
        {k for t in trials for k in t if k.startswith("val_recall@")}, key=lambda k: int(k.split("@")[1])
    )
    final_cols = sorted(
        {k for t in trials for k in t if "_recall@" in k and not k.startswith("val_recall@")},
        key=lambda k: (not k.startswith("final_"), k.split("@")[0], int(k.split("@")[1])),
    )
    recall_cols = [c for c in recall_cols if c != config.metric] + final_cols
    header = ["rank", "trial", "status", "epochs"] + keys + [f"{config.metric} (best epoch)"] + recall_cols
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def pct(v):
        return "" if v is None else (f"{v:.4f}" if config.metric == "loss" else f"{100 * v:.2f}")

    for t in trials:
        cells = [str(t["rank"]), t["trial"], t["status"], f"{t['epochs_done']}/{t['epochs']}"]
        cells += [label(t["_params"].get(k, "")) for k in keys]
        cells.append("" if t["value"] is None else f"{pct(t['value'])} ({t['best_epoch']})")
        cells += ["" if t.get(c) is None else f"{100 * t[c]:.2f}" for c in recall_cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"Sweep `{config.name}`: {len(trials)} trials, ranked by {config.metric} ({config.mode}) of the best "
        f"epoch; recalls in percent, computed from each epoch's validation descriptor store."
    ]
    if final_cols:
        notes.append(
            "final_val_* and <split>_*: the finalised model (best epoch + PCA whitening) on the whole splits."
        )
    return "\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"


def write_parquet(path: str, rows: list[dict]) -> None:
    """Rows as a Parquet table (keys starting with "_" left out; missing values null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    clean = [{k: plain(v) for k, v in r.items() if not k.startswith("_")} for r in rows]
    names = list(dict.fromkeys(k for r in clean for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in clean]) if clean else pa.table({})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_bytes(path, buffer.getvalue())


def export_best(config: SweepConfig, best: dict, path: str) -> str:
    """The best trial's training config as YAML for `sare train --config` (paths as the sweep gave them)."""
    data = config.train_dict(best["_params"])
    data.update(name=f"{config.name}-best", storage_path=config.storage_path)
    data.pop("val_store_dir", None)
    train = TrainConfig(**data)
    header = [
        f"# Best trial of sweep {config.name}: {best['trial']}, {config.metric} "
        f"{best['value']:.4f} at epoch {best['best_epoch']} (of {best['epochs']}).",
        "# Parameters: " + ", ".join(f"{k}={label(v)}" for k, v in best["_params"].items()),
        f"# Train it: sare train --config {os.path.basename(path)}",
    ]
    text = "\n".join(header) + "\n" + dump_config(train)
    write_text(path, text)
    return text

