"""The algorithm gallery (``llmhpo figures``): each figure draws what llmhpo's own
optimisers evaluated and the state they built (boxes that tile the domain, hyperspheres,
the local search's path, BO's model), not a re-implementation."""

import numpy as np
import matplotlib.pyplot as plt
import pytest
from typer.testing import CliRunner

from llmhpo.cli import app
from llmhpo.lab.figures import (MINIMA, draw_bayesian, draw_exploratory, draw_local_search, draw_partitions,
                            gp_example)
from llmhpo.objectives.functions import get_function

HIMMELBLAU = get_function("himmelblau")


def gid(ax, name):
    return [a for a in ax.get_children() if a.get_gid() == name]


def offsets(ax, name):
    return np.concatenate([np.asarray(a.get_offsets()) for a in gid(ax, name)])


def test_himmelblau_minima_are_its_zeros():
    assert max(HIMMELBLAU(m) for m in MINIMA) < 1e-8


def test_grid_against_random_25_points_each():
    fig = draw_exploratory(seed=0)
    grid, rand = fig.axes[:2]
    g, r = offsets(grid, "evaluated"), offsets(rand, "evaluated")
    assert len(g) == len(r) == 25
    assert sorted(set(np.round(g[:, 0], 9))) == [-4.0, -2.0, 0.0, 2.0, 4.0]  # the 5 x 5 cell centres
    assert len(set(map(tuple, np.round(g, 9)))) == 25
    assert len(set(np.round(r[:, 0], 9))) == 25  # random: no lattice
    np.testing.assert_allclose(fig.llmhpo["random"].X, r)
    assert len(gid(grid, "minima")[0].get_xdata()) == 4
    plt.close(fig)


def test_local_search_and_annealing_paths_go_through_evaluated_points():
    fig = draw_local_search(seed=0, budget=40)
    for ax, name in zip(fig.axes[:2], ("local_search", "annealing")):
        run = fig.llmhpo[name]
        assert len(offsets(ax, "evaluated")) == len(run.y) == 40
        (path,) = gid(ax, "path")
        P = np.column_stack([path.get_xdata(), path.get_ydata()])
        assert 2 <= len(P) <= 40
        for p in P:  # each move lands on a point the optimiser evaluated
            assert np.min(np.linalg.norm(run.X - p, axis=1)) < 1e-9
        # the local search's centre only ever improves between kicks
        if name == "local_search":
            values = [HIMMELBLAU(p) for p in P]
            assert values[-1] <= values[0]
    plt.close(fig)


def test_partitions_tile_the_box_and_points_are_centres():
    fig = draw_partitions(seed=0, budget=30)
    soo_ax, direct_ax, fda_ax = fig.axes[:3]
    for ax in (soo_ax, direct_ax):
        boxes = gid(ax, "box")
        area = sum(b.get_width() * b.get_height() for b in boxes)
        assert area == pytest.approx(100.0)  # the leaves tile [-5, 5]^2 exactly
        centres = {(round(b.get_x() + b.get_width() / 2, 6), round(b.get_y() + b.get_height() / 2, 6))
                   for b in boxes}
        run = fig.llmhpo["soo" if ax is soo_ax else "direct"]
        evaluated = {tuple(np.round(x, 6)) for x in run.X}
        assert centres <= evaluated  # each box is scored at its centre (a middle child shares its parent's)
        assert len(run.y) >= 30
        assert len(boxes) == int(ax.get_title().split(": ")[1].split(" ")[0])
    circles = gid(fda_ax, "sphere")
    spheres = fig.llmhpo["fda"].states
    assert len(circles) == len(spheres) >= 8  # the first decomposition (4 in 2-D) and deeper ones
    depths = sorted({k for k, _, _ in spheres})
    assert depths[:2] == [0, 1]
    radii = {k: max(r for kk, _, r in spheres if kk == k) for k in depths}
    assert all(radii[a] > radii[b] for a, b in zip(depths, depths[1:]))  # deeper spheres are smaller
    plt.close(fig)


def test_bayesian_figure_shows_the_gp_of_bo_and_its_next_point():
    fig = draw_bayesian(seed=0, n=6, n_init=4)
    d = fig.llmhpo
    assert len(d["X"]) == 6 and np.allclose(d["y"], gp_example(d["X"]))
    top, bottom = fig.axes[:2]
    (obs,) = gid(top, "observed")
    assert len(obs.get_xdata()) == 6
    # the GP interpolates what BO saw: small uncertainty there, larger between
    at_obs = [d["std"][np.argmin(np.abs(d["grid"] - x))] for x in d["X"]]
    assert max(at_obs) < np.max(d["std"]) / 2
    ei = d["ei"]
    assert np.all(ei >= 0) and ei.max() > 0
    i_next = np.argmin(np.abs(d["grid"] - d["x_next"]))
    assert ei[i_next] >= 0.5 * ei.max()  # BO's next point is where its acquisition is high
    assert bottom.get_ylabel() == "acquisition (EI)"
    plt.close(fig)


def test_figures_command_writes_the_gallery(tmp_path):
    r = CliRunner().invoke(app, ["figures", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "g").glob("*.png"))
    assert names == ["gallery-bayesian.png", "gallery-exploratory.png", "gallery-local-search.png",
                     "gallery-partitions.png"]
    assert all((tmp_path / "g" / n).stat().st_size > 20_000 for n in names)
