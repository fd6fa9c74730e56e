"""Reading, checking and encoding sequence data (numpy only)."""

from pipeline.data.readers import SeriesData, read_series

__all__ = ["SeriesData", "read_series"]
