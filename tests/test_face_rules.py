"""parse's two face rules, the face's own colours (infer.face_colours) and the landmark prior
(infer.landmark_prior), as the command line meets them: on by default, recorded in the folder's config
and per face, off with their --no- option, and scored by eval with their flag.

The bundled model parses scikit-image's astronaut; eval runs the tiny run on the synthetic cache.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import parse_astronaut
from facepipe.cli import cli
from facepipe.infer.edges import EPS, RADIUS
from facepipe.infer.face_colours import BETA, STRAY_MARGIN, TAU
from facepipe.infer.landmark_prior import REACH_IOD
from facepipe.infer.neck import MAX_DISTANCE

RULES = [("face-colours", "face_colours", "colour_pixels", {"beta": BETA, "tau": TAU, "stray_margin": STRAY_MARGIN,
                                                             "neck": {"max_distance": MAX_DISTANCE},
                                                             "edges": {"radius": RADIUS, "eps": EPS}}),
         ("landmark-prior", "landmark_prior", "prior_pixels", {"reach_iod": REACH_IOD})]


@pytest.fixture(scope="module")
def astronaut_rules(tmp_path_factory):
    runs = {"on": ["--crop-only"]}
    runs.update({f"no-{flag}": ["--crop-only", f"--no-{flag}"] for flag, *_ in RULES})
    return parse_astronaut(tmp_path_factory.mktemp("rules"), runs)


@pytest.mark.parametrize("flag,key,record,config", RULES)
def test_parse_lays_each_rule_by_default_and_records_it(astronaut_rules, flag, key, record, config):
    on, off = astronaut_rules / "on", astronaut_rules / f"no-{flag}"
    assert json.loads((on / "manifest.json").read_text())["config"][key] == config
    assert key not in json.loads((off / "manifest.json").read_text())["config"]
    face_on = json.loads((on / "a.json").read_text())["faces"][0]
    face_off = json.loads((off / "a.json").read_text())["faces"][0]
    assert isinstance(face_on[record], int) and record not in face_off
    if face_on[record] == 0:
        a, b = (np.asarray(Image.open(d / "a.labels.png")) for d in (off, on))
        assert np.array_equal(a, b)
    # A folder parsed without the rule is not resumed with it (its photos would be mixed).
    r = CliRunner().invoke(cli, ["parse", str(astronaut_rules / "p"), "--out", str(off), "-q", "--device", "cpu",
                                 "--crop-only"])
    assert r.exit_code == 1 and "another model or settings" in str(r.exception)


@pytest.mark.parametrize("flag,key", [(f, k) for f, k, *_ in RULES])
def test_eval_scores_with_each_rule_and_says_so(tmp_path, synthetic_cache, tiny_run, flag, key):
    out = tmp_path / "s.json"
    r = CliRunner().invoke(cli, ["eval", str(tiny_run), str(synthetic_cache), f"--{flag}", "--json", str(out),
                                 "--sheet", str(tmp_path / "s.png"), "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert rec[key] is True and 0 <= rec["pixel_acc"] <= 1
