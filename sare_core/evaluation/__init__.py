"""Evaluation: exact FAISS search, Recall@N, mAP@k, localisation error, and reports."""

from .metrics import (
    average_precision_at_k,
    first_hit_rank,
    localization_errors,
    localization_summary,
    map_at_k,
    recall_from_ranking,
)
from .recall import DEFAULT_NS, Evaluation, evaluate, evaluate_ranking, recall_at_n
from .report import format_recall_table, plot_recall_curves, write_html_report, write_json
from .search import SEARCH_MODES, SearchResult, build_flat_index, knn_search, knn_search_stream, merge_topk

__all__ = [
    "DEFAULT_NS",
    "SEARCH_MODES",
    "Evaluation",
    "SearchResult",
    "average_precision_at_k",
    "build_flat_index",
    "evaluate",
    "evaluate_ranking",
    "format_recall_table",
    "plot_recall_curves",
    "write_html_report",
    "write_json",
    "first_hit_rank",
    "knn_search",
    "knn_search_stream",
    "localization_errors",
    "localization_summary",
    "map_at_k",
    "merge_topk",
    "recall_at_n",
    "recall_from_ranking",
]
