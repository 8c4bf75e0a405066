"""support/tasks.py: downloads (mocked: no network in tests), caching, and the data formats."""

import gzip
import io
import json

import pytest

from support import tasks
from support.settings import UsageError


class FakeResponse(io.BytesIO):
    pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORE_CACHE", str(tmp_path))
    return tmp_path


def test_download_once_then_cached(cache, monkeypatch):
    calls = []
    row = json.dumps({"problem": "1+1?", "answer": "2", "unique_id": "test/x/1.json"}).encode() + b"\n"
    monkeypatch.setattr(tasks.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or FakeResponse(row))
    first = tasks.load_problems("math", "test")
    second = tasks.load_problems("math", "test")
    assert len(calls) == 1 and calls[0] == tasks.DOWNLOADS[("math", "test")]
    assert first == second and first[0].id == "test/x/1.json" and first[0].answer == "2"
    assert not list(cache.glob("*.part"))  # written to a .part file, then renamed


def test_gzipped_download_is_decompressed(cache, monkeypatch):
    row = {"task_id": "HumanEval/0", "prompt": "def f():\n", "test": "def check(c): pass", "entry_point": "f"}
    data = gzip.compress((json.dumps(row) + "\n").encode())
    monkeypatch.setattr(tasks.urllib.request, "urlopen", lambda url, timeout: FakeResponse(data))
    [problem] = tasks.load_problems("code", "test")
    assert problem.answer.endswith("check(f)")


def test_lfs_pointer_and_network_failure_are_clear_errors(cache, monkeypatch):
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n"
    monkeypatch.setattr(tasks.urllib.request, "urlopen", lambda url, timeout: FakeResponse(pointer))
    with pytest.raises(UsageError, match="Git LFS pointer"):
        tasks.load_problems("math", "train")
    assert not list(cache.glob("*.jsonl"))  # nothing cached that would look done

    def offline(url, timeout):
        raise OSError("network unreachable")
    monkeypatch.setattr(tasks.urllib.request, "urlopen", offline)
    with pytest.raises(UsageError, match="--test_data"):
        tasks.load_problems("math", "test")


def test_gsm8k_rows_and_blank_lines(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "Tom has 3 apples...", "answer": "3 + 4 = 7\n#### 7"}) + "\n\n")
    [problem] = tasks.load_problems("math", "train", str(path))
    assert problem.answer == "7" and problem.question.startswith("Tom")


def test_arithmetic_splits_are_deterministic_and_differ():
    train = tasks.load_problems("arithmetic", "train", limit=50, max_operand=99)
    assert train == tasks.load_problems("arithmetic", "train", limit=50, max_operand=99)
    assert train != tasks.load_problems("arithmetic", "test", limit=50, max_operand=99)
    assert all(int(p.answer) == sum(map(int, p.question.split("+"))) for p in train)


def test_unknown_task_is_named():
    with pytest.raises(UsageError, match="unknown task 'chess'"):
        tasks.get_task("chess")
