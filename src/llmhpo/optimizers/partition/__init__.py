"""Partition-based optimisers: SOO, BaMSOO, DIRECT and fractal decomposition (FDA)."""

from llmhpo.optimizers.partition.bamsoo import BaMSOO
from llmhpo.optimizers.partition.direct import DIRECT
from llmhpo.optimizers.partition.fda import FractalDecomposition
from llmhpo.optimizers.partition.soo import SOO

__all__ = ["BaMSOO", "DIRECT", "FractalDecomposition", "SOO"]
