"""The train stage on a tiny project: a rerun with the same inputs writes the same bytes
(the outputs DVC tracks hold no timing; the throughput is in the metrics only)."""

from __future__ import annotations

import json
import shutil

import pytest

from lib import config, provenance
from lib.stages import classes, train

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]


def test_same_inputs_give_the_same_output_bytes(tiny_project):
    classes.run(config.load("classes"))
    provenance.finish(config.load("generate"), "generate", {})  # no synthetic image is read
    values = config.stage_section(config.load_params(), "train")
    cfg = config.build("train", {**values, "steps": 4, "checkpoint_every": 2,
                                 "use_synthetic": False})
    out, metrics = tiny_project / "outputs/train", tiny_project / "metrics"

    def run() -> tuple[dict[str, bytes], bytes, dict]:
        shutil.rmtree(out, ignore_errors=True)  # as DVC does before it runs the stage
        result = train.run(cfg)
        files = {p.name: p.read_bytes() for p in out.iterdir()}
        flat = json.loads((metrics / "train.json").read_text())
        assert result["metrics"]["throughput"]["steps"] == 4
        assert flat["throughput.images_per_s"] > 0 and 0 <= flat["throughput.data_share"] <= 1
        return files, (metrics / "train_history.csv").read_bytes(), {
            k: v for k, v in flat.items() if not k.startswith("throughput.")}

    first, second = run(), run()
    assert set(first[0]) == {"model.pt", "per_class.csv", "bad_images.csv",
                             provenance.RECORD}
    for name, data in first[0].items():
        assert second[0][name] == data, f"{name} differs between two runs of the same inputs"
    assert second[1:] == first[1:]  # the curve (no timing column) and the metrics
    assert b"images_per_s" not in first[1] and b"data_share" not in first[1]
