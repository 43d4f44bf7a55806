"""Simultaneous Optimistic Optimization (Munos 2011, "Optimistic optimization of a
deterministic function without the knowledge of its smoothness", Algorithm 2).

A K-ary tree of boxes of [0, 1]^d. A box is split along its widest side into K equal
parts, each child scored at its centre; for odd K the middle child's centre is its
parent's, so it inherits the score without an evaluation. Each sweep goes down the depths
h = 0 .. min(depth, h_max) and expands, at every depth, the best leaf if it is no worse
than every leaf expanded at a smaller depth in that sweep (``v_max``; we minimise, so it
is the lowest value). The depth limit ``h_max``: "sqrt" (the default), h_max(t) = sqrt(t)
with t the number of node expansions so far, as in Munos' Algorithm 2 (t grows by one per
expanded node) and Corollary 2; "none", no limit, as the report's own SOO ran; or a fixed
integer. A sweep looks no deeper than the limit while a leaf within it remains; once every
box down to the limit is split (a fixed limit reached; Munos' tree would stop there), it
looks at every depth rather than end the study.

Parallel variant: the leaves of one sweep are chosen from the tree as it stands at the
start of the sweep, so all their children are independent evaluations handed out by
``ask(n)``. The next sweep starts as soon as a worker is free (``asynchronous``): leaves
still being evaluated are left out of its selection, so workers never wait for a sweep's
slowest trial (docs/benchmarks.md, parallel efficiency). The root is split at once (the
first sweep expands it whatever its value), so the first batch is its centre and its
children. While no leaf has a value yet (the first seconds of a parallel study) and workers
are free, the shallowest leaves still being evaluated are split ahead of their values,
breadth first: a uniform partition of the box's first levels instead of idle workers (a
middle child gets its parent's value when that arrives). With one worker none of this
changes the order of evaluations: it is the sequential algorithm.
"""

from __future__ import annotations

import math

import numpy as np

from llmhpo.optimizers.partition.tree import SweepOptimizer, new_node, split_box


class SOO(SweepOptimizer):
    name = "soo"
    stochastic = False
    asynchronous = True
    _state_attrs = SweepOptimizer._state_attrs + ("nodes", "sweeps", "n_evals", "t")

    def __init__(self, dim, rng=None, budget=None, K: int = 3, h_max: int | str | None = "sqrt"):
        super().__init__(dim, rng, budget)
        if not isinstance(K, int) or K < 2:
            raise ValueError(f"K must be an integer >= 2, got {K!r}")
        if h_max is None:
            h_max = "sqrt"
        if not (h_max in ("sqrt", "none") or (isinstance(h_max, int) and not isinstance(h_max, bool) and h_max >= 1)):
            raise ValueError(f'h_max must be "sqrt", "none" or an integer >= 1, got {h_max!r}')
        self.K, self.h_max_fixed = K, h_max
        self.nodes: list[dict] = []
        self.sweeps = 0
        self.n_evals = 0
        #: node expansions so far (Munos' t)
        self.t = 0

    # -------------------------------------------------------------- tree queries
    def h_max(self) -> int:
        """h_max(t) = floor(sqrt(t)), at least 1, t = expansions so far; no limit with "none";
        or the fixed h_max."""
        if self.h_max_fixed == "none":
            return 1 << 30
        if self.h_max_fixed != "sqrt":
            return self.h_max_fixed
        return max(1, math.isqrt(self.t))

    def leaves(self) -> list[dict]:
        return [nd for nd in self.nodes if not nd["expanded"]]

    @property
    def depth(self) -> int:
        return max((nd["depth"] for nd in self.nodes), default=0)

    def _score(self, node) -> float:
        return math.inf if node["value"] is None else node["value"]

    # -------------------------------------------------------------- sweep
    def select(self) -> list[dict]:
        """The leaves this sweep expands (Munos 2011, Alg. 2, lines 3-9)."""
        leaves = self.leaves()
        for h_top in (min(self.depth, self.h_max()), self.depth):
            chosen, v_max = [], math.inf
            for h in range(0, h_top + 1):
                at_h = [nd for nd in leaves if nd["depth"] == h]
                if not at_h:
                    continue
                best = min(at_h, key=self._score)
                if self._score(best) <= v_max and math.isfinite(self._score(best)):
                    chosen.append(best)
                    v_max = self._score(best)
            if chosen:
                return chosen
        # every leaf failed: split the shallowest one blindly rather than stop (not while
        # evaluations are in flight: their results come first)
        if self.in_flight():
            return []
        return [min(leaves, key=lambda nd: nd["depth"])] if leaves else []

    def _next_batch(self):
        self.sweeps += 1
        if not self.nodes:  # the first sweep expands the root whatever its value: at once
            root = new_node(self.nodes, np.zeros(self.dim), np.ones(self.dim), 0, None)
            return [(root["x"], self._info(root)), *self._expand(root)]
        batch = []
        for node in self.select():
            batch.extend(self._expand(node))
        return batch

    def _expand(self, node) -> list:
        """Split ``node`` into K children; the points of those to evaluate."""
        node["expanded"] = True
        self.t += 1
        batch = []
        for k, (lo, hi) in enumerate(split_box(node["lo"], node["hi"], self.K)):
            inherit = self.K % 2 == 1 and k == self.K // 2
            child = new_node(self.nodes, lo, hi, node["depth"] + 1, node["id"],
                             value=node["value"] if inherit else None, approx=inherit and node["approx"])
            if inherit:
                child["inherits"] = True  # its value is its parent's, when that comes
            else:
                batch.extend(self._children_to_evaluate(child))
        return batch

    def _ask(self, n):
        out = super()._ask(n)
        # free workers and no leaf with a value yet: split the shallowest leaves being
        # evaluated, ahead of their values (breadth first), rather than leave workers idle
        while self.asynchronous and len(out) < n and self.outstanding:
            flying = self.in_flight() | {info.get("node") for _, info in out}
            waiting = [nd for nd in self.leaves() if self._awaited(nd, flying)]
            if not waiting or any(nd["value"] is not None for nd in self.leaves()):
                break
            self.queue.extend(self._resolve_known(self._expand(min(waiting, key=lambda nd: (nd["depth"], nd["id"])))))
            out += super()._ask(n - len(out))
        return out

    def _awaited(self, node, flying: set) -> bool:
        """Whether ``node``'s value is still to come (its evaluation is in ``flying``, or it
        inherits a value still to come)."""
        while node["value"] is None:
            if node["id"] in flying:
                return True
            if not node.get("inherits"):
                return False  # failed
            node = self.nodes[node["parent"]]
        return False

    def _children_to_evaluate(self, child):
        return [(child["x"], self._info(child))]

    def _info(self, node) -> dict:
        return {"node": node["id"], "depth": node["depth"], "lo": node["lo"].tolist(), "hi": node["hi"].tolist()}

    def _record(self, candidate, value):
        node = self.nodes[candidate.info["node"]]
        node["value"] = value
        self.n_evals += 1
        # a node split before its value came: its middle child (and so on down) inherits it now
        heirs = [node] if node["expanded"] and value is not None else []
        while heirs:
            parent = heirs.pop()["id"]
            for nd in self.nodes:
                if nd["parent"] == parent and nd.get("inherits") and nd["value"] is None:
                    nd["value"], nd["approx"] = value, node["approx"]
                    heirs.append(nd)
