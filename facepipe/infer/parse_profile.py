"""`facepipe bench --parse PHOTOS`: where the seconds of a real `parse` go.

Runs the real parse (same code, same pool) into a throw-away folder and reports photos/s, faces/s and
each step's share of the work: decode, detect+landmarks, warp (to the crop), network, face rules (the
face's own colours and the landmark prior laid over the network's answer), warp back, encode+write. Step seconds are summed over worker processes, so their total can exceed the wall time;
the share says which step to make faster. Next to the network's time per face inside parse, the same
model's batch-1 latency outside it (the figure `bench --fps` reports) shows what the pipeline costs it.
"""
from __future__ import annotations

import tempfile

import torch

from facepipe.infer.parse import Parser, collect_photos, parse_photos
from facepipe.util.progress import SILENT, Reporter
from facepipe.util.timing import timeit

STEPS = ("decode", "detect+landmarks", "warp", "network", "face rules", "warp back", "encode+write")


def network_latency_ms(parser: Parser, seconds: float = 1.0, batch: int = 1) -> float:
    """Median time of one batch through the parser's network alone, as parse calls it (softmax
    included), timed by bench's own loop (util.timing)."""
    c = 4 if parser.heatmap else 3
    x = torch.randn(batch, c, parser.size, parser.size, device=parser.device)
    times, _ = timeit(lambda: parser.model.predict(x), 3, seconds, 5, lambda: None,
                      torch.get_num_threads(), parser.device.type == "cpu")
    return 1000 * sorted(times)[len(times) // 2]


def _alone_as_in_parse(parser: Parser, summary: dict, batch: int) -> float:
    """The network alone per face with the threads and batch parse gave it (one torch thread while
    worker processes hold the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(summary.get("network_threads") or threads)
    try:
        return network_latency_ms(parser, batch=batch) / batch
    finally:
        torch.set_num_threads(threads)


def profile_parse(photos, model: str | None = None, device: str = "cpu", workers: int = 0, batch_size: int = 16,
                  outputs: tuple = ("labels", "overlay", "json"), reporter: Reporter = SILENT) -> dict:
    """One JSON-ready row: counts, photos/s, faces/s, per-step seconds and shares, network vs bench."""
    parser = Parser.load(model, device)
    files = collect_photos(photos)
    with tempfile.TemporaryDirectory(prefix="facepipe-parse-bench-") as d:
        s = parse_photos(parser, files, d, batch_size=batch_size, reporter=reporter, workers=workers,
                         outputs=outputs)
    sec = s["stage_seconds"]
    work = sum(sec.values()) or 1e-9
    wall = s["wall_seconds"]
    return {
        "kind": "parse", "model": s["model"]["name"], "photos": s["photos"], "faces": s["faces"],
        "unreadable": len(s["unreadable"]), "no_face": len(s["no_face"]), "workers": s["workers"],
        "batch": batch_size, "device": s["device"], "torch_threads": torch.get_num_threads(),
        "wall_s": wall, "photos_per_s": round(s["photos"] / wall, 2), "faces_per_s": round(s["faces"] / wall, 2),
        "steps": {k: {"seconds": round(sec.get(k, 0.0), 3), "share": round(sec.get(k, 0.0) / work, 3)}
                  for k in STEPS},
        "network_ms_per_face": s["ms_network_per_face"],
        "network_cpu_ms_per_face": s["ms_network_cpu_per_face"],
        "face_rules_ms_per_face": s["ms_face_rules_per_face"],
        "network_ms_batch1_alone": round(network_latency_ms(parser), 2),
        "network_ms_per_face_alone_as_in_parse": round(_alone_as_in_parse(parser, s, batch_size), 2),
    }


def profile_rows(row: dict) -> list[tuple]:
    """The row as (step, seconds, share) lines for a table a person reads."""
    out = [(k, f"{v['seconds']:.2f} s", f"{100 * v['share']:.0f}%") for k, v in row["steps"].items()]
    out += [("photos/s", row["photos_per_s"], ""), ("faces/s", row["faces_per_s"], ""),
            ("wall", f"{row['wall_s']:.2f} s", f"{row['workers']} workers"),
            ("network per face in parse", f"{row['network_ms_per_face']} ms", f"batch {row['batch']}"),
            ("  its CPU time per face", f"{row['network_cpu_ms_per_face']} ms", "the network's own cost"),
            ("face rules per face", f"{row['face_rules_ms_per_face']} ms", "colours, landmark prior"),
            ("network alone, as parse runs it", f"{row['network_ms_per_face_alone_as_in_parse']} ms",
             f"per face, batch {row['batch']}"),
            ("network alone, batch 1", f"{row['network_ms_batch1_alone']} ms", "")]
    return out
