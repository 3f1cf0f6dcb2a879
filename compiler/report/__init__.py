"""The build report: its headline numbers, its charts, and report.html rendered from report.json."""
