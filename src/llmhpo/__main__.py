"""``python -m llmhpo``: the ``llmhpo`` command."""

from llmhpo.cli import main

if __name__ == "__main__":
    main()
