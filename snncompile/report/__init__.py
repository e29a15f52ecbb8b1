"""What a compile measured and how it is shown: report.json and report.md (build), report.html and
its figures (html, plots), the PNG renderer (render), the measurements the plots show
(diagnostics), the accuracy sweep over processes (sweep) and ``snncompile verify`` (verify)."""
