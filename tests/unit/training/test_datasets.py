"""Dataset validation names the bad line; splits and mixes are seeded and honest."""

from __future__ import annotations

import json

import pytest

from services.common.errors import InvalidArgument
from services.training.datasets import mix, split_rows, validate_jsonl


def _write(tmp_path, content: bytes):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    return path


GOOD = b'{"prompt": "a", "completion": "b"}\n'


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        (GOOD + b'{"prompt": "a", "completion": "b"\n', "", "line 2: invalid JSON"),
        (GOOD * 2 + b'{"prompt": "\xff\xfe", "completion": "b"}\n', "", "line 3: not valid UTF-8"),
        (GOOD + b"\n" + GOOD, "", "line 2: empty row"),
        (GOOD + b'{"prompt": "a", "completion": ""}\n', "", "line 2: 'completion' is empty"),
        (GOOD + b'{"prompt": "a"}\n', "", "line 2: 'completion' must be a string"),
        (GOOD + b'["a"]\n', "", "line 2: each row must be a JSON object"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}\n', "", "last message"),
        (b'{"messages": [{"role": "bot", "content": "x"}]}\n', "", "needs a role"),
        (b'{"text": "x"}\n', "prompt_completion", "line 1: 'prompt' must be a string"),
        (b'{"foo": 1}\n', "", "cannot tell the format"),
        (b"", "", "the dataset is empty"),
        (b'{"text": "a"}\n' + json.dumps({"text": "x" * 300}).encode(), "text", "line 2: row is"),
    ],
)
def test_bad_rows_are_refused_naming_the_line(tmp_path, content, fmt, message):
    with pytest.raises(InvalidArgument) as err:
        validate_jsonl(_write(tmp_path, content), fmt, max_row_bytes=200)
    assert message in err.value.message


@pytest.mark.parametrize(
    "content",
    [GOOD + b"[" * 100_000 + b"\n", GOOD + b'{"prompt": ' + b"[" * 100_000 + b"\n"],
)
def test_deeply_nested_row_is_refused_naming_the_line(tmp_path, content):
    with pytest.raises(InvalidArgument) as err:
        validate_jsonl(_write(tmp_path, content), "", max_row_bytes=256 * 1024)
    assert "line 2: JSON nested too deeply" in err.value.message


def test_good_file_is_summarised_with_its_hash(tmp_path):
    import hashlib

    content = GOOD * 3 + b'{"prompt": "c", "completion": "d"}'
    summary = validate_jsonl(_write(tmp_path, content))
    assert summary.format == "prompt_completion" and summary.rows == 4
    assert summary.sha256 == hashlib.sha256(content).hexdigest()
    assert summary.size_bytes == len(content)


def test_split_is_seeded_disjoint_and_keeps_train():
    rows = [{"i": i} for i in range(20)]
    train, val, test = split_rows(rows, 0.1, 0.2, seed=7)
    assert (len(train), len(val), len(test)) == (14, 2, 4)
    assert sorted(r["i"] for r in train + val + test) == list(range(20))
    assert split_rows(rows, 0.1, 0.2, seed=7) == (train, val, test)
    assert split_rows(rows, 0.1, 0.2, seed=8) != (train, val, test)
    with pytest.raises(InvalidArgument):
        split_rows(rows[:2], 0.1, 0.1, seed=1)


def test_mix_follows_weights():
    small = [{"src": "a", "i": i} for i in range(10)]
    large = [{"src": "b", "i": i} for i in range(90)]
    mixed = mix([(small, 3.0), (large, 1.0)], seed=1)
    share = sum(r["src"] == "a" for r in mixed) / len(mixed)
    assert len(mixed) == 100 and share == pytest.approx(0.75, abs=0.01)
    assert mixed == mix([(small, 3.0), (large, 1.0)], seed=1)
