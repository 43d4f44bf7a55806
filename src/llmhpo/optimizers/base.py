"""The optimiser protocol: ``ask(n)`` / ``tell(candidate, value)`` on points of [0, 1]^d.

Every optimiser minimises. A multi-objective optimiser (``multi_objective``) is told one
value per objective (a list, each minimised); the others one number. Constraints (a list of
floats, <= 0 where one holds, as Optuna's) go to an optimiser that models them
(``handles_constraints``); for any other, an infeasible result is told as a failure, so it
steers away from it as from a configuration that fails. The public methods do the bookkeeping (ids, pending work,
history, validation); subclasses implement ``_ask`` and ``_tell`` on arrays, and list the
attributes that make up their state in ``_state_attrs`` so that ``state_dict`` /
``load_state_dict`` give an identical continuation through plain JSON.

Two duties are kept here for every optimiser: a proposed point is first moved to the
configuration that will really be evaluated (``snap``: integers and categoricals rounded,
see ``SearchSpace.snap``), so the history holds evaluated points; and no configuration is
handed out twice: a point equal to one already told (failures included) or still pending
is replaced by the nearest fresh configuration found by growing random steps. A failed
configuration (diverged, out of memory) fails the same way every time: proposing it again
would only burn budget.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from llmhpo import _json


@dataclass
class Candidate:
    """A point an optimiser proposes, with its bookkeeping.

    x: (d,) point of [0, 1]^d. info: JSON-able details (e.g. the partition-tree node),
    stored with the trial.
    """

    id: int
    x: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "x": [float(v) for v in self.x], "info": _json.encode(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(int(d["id"]), np.asarray(d["x"], dtype=float), _json.decode(d.get("info", {})))


class Optimizer:
    """Base class; see the module docstring.

    dim: number of dimensions d. rng: the optimiser's own random stream.
    budget: the number of evaluations planned, when known (a hint, never a stop rule).
    """

    name: ClassVar[str] = "base"
    #: False for optimisers whose sequence does not depend on the seed.
    stochastic: ClassVar[bool] = True
    #: whether ``tell`` takes one value per objective (``set_objectives``)
    multi_objective: ClassVar[bool] = False
    #: whether ``_tell`` is given the constraint values (else infeasible = failed)
    handles_constraints: ClassVar[bool] = False
    #: whether observations of earlier studies (``set_earlier``) steer its proposals
    takes_earlier: ClassVar[bool] = False
    #: whether the variables' priors (``prior``) shape its proposals (grid and the partition
    #: methods: no; ``llmhpo check`` says so)
    uses_prior: ClassVar[bool] = True
    _state_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int, rng: np.random.Generator | None = None, budget: int | None = None):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.rng = rng if rng is not None else np.random.default_rng()
        self.budget = budget
        self.pending: dict[int, Candidate] = {}
        #: every told point and its value (None for a failure), in tell order
        self.X: list[np.ndarray] = []
        self.y: list[float | None] = []
        self._next_id = 0
        #: (d,) -> (d,): the point of the configuration actually evaluated (None: every point
        #: is its own configuration); set by ``make_optimizer``, not part of the state
        self.snap: Callable[[np.ndarray], np.ndarray] | None = None
        #: the variables' priors on the unit cube (``llmhpo.priors.UnitPrior``; None: uniform);
        #: set by ``make_optimizer``, not part of the state
        self.prior = None
        #: objectives told per result (``set_objectives``; not part of the state)
        self.n_objectives = 1
        #: the constraint values of the result being told (``handles_constraints``), None: none
        self.constraints: list[float] | None = None

    def set_objectives(self, m: int) -> None:
        """Tell values of ``m`` objectives from now on (before the first ask)."""
        if m > 1 and not self.multi_objective:
            raise ValueError(f"optimizer '{self.name}' optimises one objective, not {m}")
        self.n_objectives = m
        self._after_load()

    def from_prior(self, U: np.ndarray) -> np.ndarray:
        """U: (d,) or (n, d) uniform points -> the same shape distributed as the prior (the
        identity without one): where sampling designs and starting points go through."""
        if self.prior is None:
            return U
        U = np.asarray(U, dtype=float)
        return self.prior.from_uniform(U.reshape(-1, self.dim)).reshape(U.shape)

    # ---------------------------------------------------------------- options
    @classmethod
    def options(cls) -> dict[str, Any]:
        """The options the optimiser accepts (keyword arguments beyond dim, rng and budget),
        with their defaults. Must not import anything heavy: configs are checked with it."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if k not in ("self", "dim", "rng", "budget")
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def check_types(cls, options: Mapping[str, Any]) -> None:
        """TypeError for an option whose value is not of its default's kind: true/false for a
        flag (the string "false" is not false), a whole number for a count, a number for a
        real, a string for a name (options taking one value per dimension also take a list;
        options without a default are not checked here)."""
        defaults, params = cls.options(), inspect.signature(cls.__init__).parameters
        for key, value in options.items():
            default = defaults[key]
            note = str(params[key].annotation) if key in params else ""
            if default is None or (value is None and "None" in note):
                continue
            # the kinds it takes: its annotation's (``int | str``: a depth or "sqrt"), else its default's
            kinds = [k for k in ("bool", "int", "float", "str", "list") if k in note] or [type(default).__name__]
            flag = isinstance(value, (bool, np.bool_))
            ok = any({"bool": flag, "list": isinstance(value, (list, tuple)),
                      "int": isinstance(value, numbers.Integral) and not flag,
                      "float": isinstance(value, numbers.Real) and not flag,
                      "str": isinstance(value, str)}.get(k, True) for k in kinds)
            if not ok:
                words = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
                         "list": "a list (one per variable)"}
                hint = f" (write {int(value)}, not {value})" if "int" in kinds and isinstance(value, float) \
                    and value.is_integer() else ""
                raise TypeError(f"{key} must be {' or '.join(words.get(k, k) for k in kinds)}{hint}, got {value!r}")

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> None:
        """Raise TypeError or ValueError for a bad option value, without a dimension and before
        anything runs; the names are checked already. Default: build one for a 2-dimensional
        space (its constructor checks its options); options given per dimension (lists) are
        checked when the space is known. A class whose constructor is heavy checks its own."""
        if options and not any(isinstance(v, (list, tuple)) for v in options.values()):
            cls(2, np.random.default_rng(0), None, **options)

    @classmethod
    def fit_options(cls, options: Mapping[str, Any], space) -> dict[str, Any]:
        """The options for a study's search space (``llmhpo.space.SearchSpace``), which the
        optimiser itself never sees. Default: as given."""
        return dict(options)

    # ---------------------------------------------------------------- protocol
    def ask(self, n: int = 1) -> list[Candidate]:
        """Up to ``n`` new candidates; fewer, even none, when results must come in first."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n!r}")
        out: list[Candidate] = []
        for x, info in self._ask(n)[:n]:
            x = self.snap_point(x)
            others = [c.x for c in out]
            if self.is_known(x, others):
                fresh = self._fresh_near(x, others)
                if fresh is not None:
                    x, info = fresh, dict(info, moved=True)
            out.append(self._add_pending(x, info))
        return out

    # ---------------------------------------------------------------- duplicates
    #: two points closer than this (max-norm, in [0, 1]^d) are the same configuration
    same_tol: ClassVar[float] = 1e-9

    def snap_point(self, x) -> np.ndarray:
        """A proposed point x (d,) in [0, 1]^d, clipped into the box and snapped to its
        configuration (integers, choices, steps): the point an ask of this optimiser registers."""
        x = np.clip(np.asarray(x, dtype=float).reshape(self.dim), 0.0, 1.0)
        if self.snap is not None:
            x = np.clip(np.asarray(self.snap(x), dtype=float).reshape(self.dim), 0.0, 1.0)
        return x

    def known_points(self) -> np.ndarray:
        """(m, d): every told point (failed ones included) and every pending one."""
        pts = [*self.X, *(c.x for c in self.pending.values())]
        return np.asarray(pts, dtype=float).reshape(len(pts), self.dim)

    def is_known(self, x: np.ndarray, extra: list[np.ndarray] | None = None) -> bool:
        """Whether the configuration of x (d,) was told or is pending (or is in ``extra``)."""
        pts = self.known_points()
        if extra:
            pts = np.vstack([pts, np.asarray(extra, dtype=float).reshape(-1, self.dim)])
        return bool(len(pts)) and bool(np.min(np.max(np.abs(pts - x), axis=1)) <= self.same_tol)

    def _fresh_near(self, x: np.ndarray, extra: list[np.ndarray]) -> np.ndarray | None:
        """The first unknown configuration among random steps of growing size around x
        (0.01 to ~1 of the box), then uniform points; None if all 200 tries are known
        (a small discrete space that is used up)."""
        for k in range(200):
            if k < 150:
                y = x + 0.01 * 2.0 ** (k // 20) * self.rng.standard_normal(self.dim)
            else:
                y = self.rng.random(self.dim)
            y = self.snap_point(1.0 - np.abs(1.0 - np.abs(y)))  # reflect at the walls
            if not self.is_known(y, extra):
                return y
        return None

    def tell(self, candidate: Candidate, value: Any, constraints: list[float] | None = None) -> None:
        """Report the value of a pending candidate: a number, or with several objectives a list
        of ``n_objectives`` numbers; None (or NaN/inf) means the trial failed. constraints:
        Optuna-style values, <= 0 where a constraint holds (see the module docstring)."""
        if candidate.id not in self.pending:
            raise ValueError(f"candidate {candidate.id} is not pending (already told, or from another optimiser)")
        value = self._checked(value)
        if constraints is not None and not self.handles_constraints:
            if any(c > 0 for c in constraints):
                value = None
            constraints = None
        candidate = self.pending.pop(candidate.id)
        self.X.append(candidate.x.copy())
        self.y.append(value)
        self.constraints = None if value is None or constraints is None else [float(c) for c in constraints]
        try:
            if candidate.info.get("external"):
                self._observe(candidate, value)
            else:
                self._tell(candidate, value)
        finally:
            self.constraints = None

    def _checked(self, value: Any) -> Any:
        """A told value as a float (a list of ``n_objectives`` floats), None for a failure."""
        if value is None:
            return None
        if self.n_objectives == 1:
            value = float(value)
            return value if math.isfinite(value) else None
        values = [float(v) for v in value]
        if len(values) != self.n_objectives:
            raise ValueError(f"{self.name} optimises {self.n_objectives} objectives, told {len(values)} values")
        return values if all(math.isfinite(v) for v in values) else None

    def register(self, x: np.ndarray, info: dict[str, Any] | None = None) -> Candidate:
        """A pending candidate the optimiser did not propose (a warm-start configuration).

        Its value is given to ``_observe`` instead of ``_tell``: model-based optimisers learn
        from it, the others only keep it in their history.
        """
        return self._add_pending(self.snap_point(x), dict(info or {}, external=True))

    @property
    def best(self) -> tuple[np.ndarray | None, float | None]:
        """(x, value) of the best successful observation so far."""
        ok = [(v, i) for i, v in enumerate(self.y) if v is not None]
        if not ok:
            return None, None
        v, i = min(ok)
        return self.X[i], v

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically, as plain JSON types."""
        return _json.encode(
            {
                "name": self.name,
                "dim": self.dim,
                "rng": self.rng.bit_generator.state,
                "next_id": self._next_id,
                "pending": [c.to_dict() for c in self.pending.values()],
                "X": np.asarray(self.X).reshape(len(self.X), self.dim),
                "y": list(self.y),
                "own": {a: getattr(self, a) for a in self._state_attrs},
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = _json.decode(state)
        if state["name"] != self.name or state["dim"] != self.dim:
            raise ValueError(
                f"state of {state['name']} in {state['dim']}-D cannot be loaded into {self.name} in {self.dim}-D"
            )
        self.rng.bit_generator.state = state["rng"]
        self._next_id = state["next_id"]
        self.pending = {c["id"]: Candidate.from_dict(c) for c in state["pending"]}
        self.X = [np.asarray(x, dtype=float) for x in state["X"]]
        self.y = list(state["y"])
        for a, v in state["own"].items():
            setattr(self, a, v)
        self._after_load()

    # ---------------------------------------------------------------- for subclasses
    def _ask(self, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        raise NotImplementedError

    def _tell(self, candidate: Candidate, value: float | None) -> None:
        """Default: nothing beyond the history kept by the base class."""

    def suggest(self, X: np.ndarray, y: np.ndarray, pending: list[np.ndarray]) -> np.ndarray | None:
        """A point proposed by this optimiser's model fitted to other data (X: (n, d) points of
        [0, 1]^d, y: (n,) values to minimise), leaving its own history alone; multi-fidelity
        uses it to propose from the highest rung with enough scores (BOHB). None: not a
        model-based optimiser (or too little data)."""
        return None

    def set_earlier(self, groups: list[tuple[np.ndarray, np.ndarray]], designed: int = 0) -> None:
        """Observations of earlier studies (``[warm_start] from``, use = "data"), one group per
        study: X (n, d) points of [0, 1]^d, y (n,) values to minimise, on that study's own
        scale. They are no part of the history nor of the state (the caller gives them again
        at every start, before ``load_state_dict``). designed: earlier studies' configurations
        registered to be evaluated first (use = "design"), which an optimiser with an initial
        design may count in it. Default: ignored (``takes_earlier``)."""

    def _observe(self, candidate: Candidate, value: float | None) -> None:
        """A value for a registered (not proposed) point; ignored unless overridden."""

    def _after_load(self) -> None:
        """Rebuild derived objects (engines, models) after ``load_state_dict``."""

    def _add_pending(self, x: np.ndarray, info: dict[str, Any]) -> Candidate:
        c = Candidate(self._next_id, x, dict(info))
        self._next_id += 1
        self.pending[c.id] = c
        return c

    def _observed(self) -> tuple[np.ndarray, np.ndarray]:
        """Successful observations: X (n, d) in [0, 1], y (n,)."""
        idx = [i for i, v in enumerate(self.y) if v is not None]
        X = np.asarray([self.X[i] for i in idx], dtype=float).reshape(len(idx), self.dim)
        return X, np.asarray([self.y[i] for i in idx], dtype=float)

    def _seed(self) -> int:
        """A fresh 32-bit seed drawn from the optimiser's stream (for libraries that want one)."""
        return int(self.rng.integers(0, 2**31 - 1))
