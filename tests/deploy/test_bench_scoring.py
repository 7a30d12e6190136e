"""`python -m deploy.bench.scoring` at a tiny size: it reports a cost for the users it scored, and
the same stream scores alike on every run (the digest two revisions are compared by)."""

from __future__ import annotations

import re

import pytest

from deploy.bench import scoring

ARGS = ["--events", "3000", "--warm-polls", "1", "--polls", "2", "--batch", "300"]


def test_the_scoring_bench_reports_and_scores_the_same_stream_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    digests = []
    for _ in range(2):
        scoring.main(ARGS)
        line = capsys.readouterr().out.strip().splitlines()[-1]
        found = re.search(
            r"([\d,]+) users scored; scoring (\d+) µs a user.*scores digest ([0-9a-f]{16})", line
        )
        assert found, line
        assert 0 < int(found.group(1).replace(",", "")) <= 600  # at most one context per event
        digests.append(found.group(3))
    assert digests[0] == digests[1]


def test_the_best_of_several_runs_scores_alike(capsys: pytest.CaptureFixture[str]) -> None:
    scoring.main(ARGS)
    once = capsys.readouterr().out.strip().splitlines()[-1]
    scoring.main([*ARGS, "--best-of", "3"])
    best = capsys.readouterr().out.strip().splitlines()[-1]
    assert best.endswith("(scoring: the best of 3 runs a poll)")
    assert once.split("scores digest ")[1][:16] == best.split("scores digest ")[1][:16]


@pytest.mark.parametrize("args", [["--polls", "0"], ["--best-of", "0"]])
def test_the_scoring_bench_refuses_meaningless_sizes(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        scoring.main(args)
