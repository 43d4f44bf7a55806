"""The lab, apart from the study path: ``bench`` (optimisers x benchmark functions x seeds, the
tables of docs/benchmarks.md), ``mobench`` (the same for several objectives), ``figures`` (the
algorithm gallery of the report's chapter 2) and ``recorded`` (the recorded LoRA benchmark's
surrogate). A study imports none of them, except ``recorded`` for a study of the function
``lora_smollm2``."""
