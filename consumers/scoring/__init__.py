"""Where a worker computes its recommendations: in its own process, or in a second one that scores
a poll while the worker writes the next (see :mod:`consumers.scoring.base`)."""

from consumers.scoring.base import ScoreJob, Scorer, ScoreResult
from consumers.scoring.inline import InlineScorer
from consumers.scoring.process import ProcessScorer

__all__ = ["InlineScorer", "ProcessScorer", "ScoreJob", "ScoreResult", "Scorer"]
