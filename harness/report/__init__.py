"""Reports people read: one offline HTML page, a markdown summary, or the tidy table as data."""

from harness.report.build import FORMATS, build_report, report_html

__all__ = ["FORMATS", "build_report", "report_html"]
