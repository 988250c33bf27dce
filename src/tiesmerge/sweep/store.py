"""The sweep directory: its config stamp (refuses a changed config unless --force), `points.jsonl` appended
and fsynced after every point (resume skips what is there), each point's merged adapter, results.csv."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from tiesmerge.atomic import replace_file, write_file
from tiesmerge.errors import BadInputError
from tiesmerge.sweep.config import SweepConfig

STAMP = "sweep.json"
POINTS = "points.jsonl"
OWNED = (STAMP, POINTS, "points", "results.csv", "sweep.png", "best", "test")


class SweepStore:
    def __init__(self, root: Path, cfg: SweepConfig, *, force: bool = False):
        self.root = Path(root)
        self.cfg = cfg
        stamp = self.root / STAMP
        if stamp.is_file():
            old = json.loads(stamp.read_text()).get("config_digest")
            if old != cfg.digest():
                if not force:
                    raise BadInputError(f"{self.root} holds a sweep of a different config (digest {old}, now "
                                        f"{cfg.digest()}); use another -o directory or pass --force to start over")
                self.clear()
        elif self.root.is_dir() and any(self.root.iterdir()) and not force:
            raise BadInputError(f"{self.root} exists, is not empty and holds no sweep; pass --force or another -o")
        elif force:
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        write_file(stamp, json.dumps({"config_digest": cfg.digest(),
                                      "config": cfg.model_dump(mode="json", by_alias=True)}, indent=2, default=str) + "\n")

    def clear(self) -> None:
        for name in OWNED:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    def point_dir(self, key: str) -> Path:
        return self.root / "points" / key

    def has_adapter(self, key: str) -> bool:
        d = self.point_dir(key)
        return (d / "adapter_config.json").is_file() and (d / "merge_report.json").is_file()

    def merge_summary(self, key: str) -> dict:
        return json.loads((self.point_dir(key) / "merge_report.json").read_text())["summary"]

    def rows(self) -> list[dict]:
        """Finished points; a torn last line (a kill mid-write) is ignored and will be recomputed."""
        path = self.root / POINTS
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def append(self, row: dict) -> None:
        path = self.root / POINTS
        data = path.read_bytes() if path.is_file() else b""
        if data and not data.endswith(b"\n"):  # drop a torn line left by a kill
            path.write_bytes(data[: data.rfind(b"\n") + 1])
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_csv(self, rows: list[dict], domains: list[str]) -> Path:
        path = self.root / "results.csv"
        cols = ["key", "method", "density", "lambda", "rank", "space", "accuracy_mean", "normalized_mean",
                "normalized_worst", "normalized_worst_domain", "gain_retention_mean", "retained_energy_mean",
                "sign_conflict_rate_mean", "selected"] + [f"accuracy_{d}" for d in domains]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(cols)
                for r in rows:
                    w.writerow([_fmt(r.get(c, r.get("accuracy", {}).get(c.removeprefix("accuracy_")))) for c in cols])

        return replace_file(path, write)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6f}"
    return str(v)
