"""The lab, apart from the study path: ``bench`` (optimisers x benchmark functions x seeds, the
tables of docs/benchmarks.md), ``mobench`` (the same for several objectives) and ``figures`` (the
algorithm gallery of the report's chapter 2). Nothing a study runs imports them."""
