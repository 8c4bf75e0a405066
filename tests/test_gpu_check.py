"""The GPU check (.ci/gpu.sh): its CPU version runs every check and passes here, so the script is ready
for the first GPU; and its greedy comparison passes rounding noise but catches a real disagreement."""

import importlib.util
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = ["sampler", "update", "resume", "compile", "memory", "tiny", "bench", "smol"]


def load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, ".ci", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_greedy_comparison_allows_a_near_tie_flip_but_not_a_log_prob_gap():
    compare = load_driver().compare_greedy
    tokens, logps = [[5, 6, 7, 8]], [[-1.0, -2.0, -0.5, -0.7]]
    # A near-tie at step 2: the other token, with (nearly) the same top log-prob; the rest is not compared.
    flipped, flipped_lp = [[5, 6, 9, 1]], [[-1.0, -2.001, -0.502, -9.0]]
    assert compare(tokens, logps, flipped, flipped_lp) == (3, 2, 0, pytest.approx(0.002))
    # The same tokens with log-probs off by 0.5 nats (a padding bug, say): the gap is what is reported.
    assert compare(tokens, logps, tokens, [[-1.0, -2.5, -0.5, -0.7]]) == (4, 4, 1, pytest.approx(0.5))


@pytest.mark.slow
def test_cpu_version_of_the_gpu_check_passes(tmp_path):
    """bash .ci/gpu.sh --cpu: exit 0, one PASS or SKIP line per check in order, the results file written.
    The GGUF check is pointed at an empty folder, so it reports SKIP (on a CPU it takes minutes; the
    GGUF path itself is tests/test_gguf.py's)."""
    empty = tmp_path / "no_gguf"
    empty.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUT": str(tmp_path), "SCORE_GGUF": str(empty)}
    result = subprocess.run(["bash", ".ci/gpu.sh", "--cpu"], cwd=ROOT, capture_output=True, text=True, timeout=3700,
                            env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert [line.split()[1].rstrip(":") for line in lines] == CHECKS, result.stdout
    assert all(line.startswith(("PASS", "SKIP")) for line in lines), result.stdout
    assert all(line.startswith("PASS") for line in lines[:-1]), result.stdout  # only the GGUF may be missing here
    assert "SKIP smol: no *.gguf" in result.stdout
    written = (tmp_path / "gpu_check.txt").read_text()
    assert all(line in written for line in lines) and "total " in written
