"""Evaluation: routing metrics (AIQ, APGR, hull), the side-by-side harness and plots."""
