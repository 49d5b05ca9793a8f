"""Seeded, paired studies: a grid of ordinary training runs (:mod:`.grid`), their statistics
(:mod:`.stats`, no training code), each grid's report (:mod:`.report`) and the grids side by
side (:mod:`.summary`)."""

from .grid import (Run, Study, dry_run, keep_predictions, load_study, merge_sections, parse_shard,
                   run_grid, run_one, shard, variant_config)
from .report import aggregate, headline_table, markdown, report, same_start
from .summary import read_results, summary_markdown, write_summary

__all__ = ["Run", "Study", "aggregate", "dry_run", "headline_table", "keep_predictions",
           "load_study", "markdown", "merge_sections", "parse_shard", "read_results", "report",
           "run_grid", "run_one", "same_start", "shard", "summary_markdown", "variant_config",
           "write_summary"]
