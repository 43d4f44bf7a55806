"""Rung arithmetic and decisions of successive halving, Hyperband and ASHA, against
brackets computed by hand (Li et al. 2018, Table 1: R = 81, eta = 3)."""

import pytest

from llmhpo.schedulers import ASHA, Hyperband, Job, make_scheduler, rungs


def test_rungs_from_min_max_eta():
    assert rungs(1, 81, 3) == [1, 3, 9, 27, 81]
    assert rungs(4, 36, 3) == [4, 12, 36]
    assert rungs(5, 100, 3) == [11, 33, 100]  # floor(log3(20)) = 2: r_k = 100 * 3^(k-2), rounded
    assert rungs(0.1, 1.0, 2, integer=False) == pytest.approx([0.125, 0.25, 0.5, 1.0])


def test_hyperband_brackets_match_the_paper():
    hb = Hyperband(rungs(1, 81, 3), 3)
    # bracket s: n configurations at r = 81 * 3^-s, then n_i = floor(n 3^-i)
    table = {s: [hb.rung_size(s, i) for i in range(s + 1)] for s in range(4, -1, -1)}
    assert table == {4: [81, 27, 9, 3, 1], 3: [34, 11, 3, 1], 2: [15, 5, 1], 1: [8, 2], 0: [5]}


def drive(sched, values, limit=10_000):
    """Run jobs one at a time; values(config_id, rung) -> value. Returns the jobs in order."""
    jobs, next_id = [], 0
    for _ in range(limit):
        job = sched.next_job()
        if job is None:
            break
        if job.config_id is None:
            cid, next_id = next_id, next_id + 1
            sched.add(cid, job)
        else:
            cid = job.config_id
            sched.started(cid, job.rung)
        jobs.append((cid, job.rung))
        sched.finished(cid, job.rung, values(cid, job.rung))
        sched.stop_waiting()
        if len(jobs) >= limit:
            break
    return jobs


def test_successive_halving_promotes_the_best_third_of_each_full_rung():
    sh = make_scheduler("sh", rungs(1, 9, 3), 3)  # one bracket: 9 at r=1, 3 at r=3, 1 at r=9
    jobs = drive(sh, lambda cid, k: float(cid), limit=13)
    assert jobs[:9] == [(i, 0) for i in range(9)]
    assert sorted(jobs[9:12]) == [(0, 1), (1, 1), (2, 1)]  # configs 0, 1, 2 have the lowest values
    assert jobs[12] == (0, 2)
    stopped = {c.id for c in sh.configs.values() if c.stopped}
    assert stopped == {3, 4, 5, 6, 7, 8, 1, 2}


def test_synchronous_rung_waits_for_every_member():
    sh = make_scheduler("sh", rungs(1, 9, 3), 3)
    for i in range(9):
        job = sh.next_job()
        assert job == Job(0, 0)
        sh.add(i, job)
    for i in range(8):
        sh.finished(i, 0, float(i))
    assert sh.next_job() == Job(0, 1)  # rung 0 of bracket 0 is not complete: a new bracket starts
    sh.finished(8, 0, 8.0)
    assert sh.next_job() == Job(1, 0, 0)


def test_hyperband_cycles_through_its_brackets():
    hb = make_scheduler("hyperband", rungs(1, 9, 3), 3)  # K = 2: brackets s = 2, 1, 0
    jobs = drive(hb, lambda cid, k: float(cid), limit=22)  # 9+3+1, 5+1, 3: the three brackets
    firsts = [hb.configs[i].start_rung for i in sorted(hb.configs)]
    # bracket s=2: 9 configs start at rung 0; s=1: ceil(3/2*3)=5 at rung 1; s=0: 3 at rung 2
    assert firsts == [0] * 9 + [1] * 5 + [2] * 3
    assert [k for _, k in jobs].count(2) == 1 + 1 + 3  # one winner per bracket reaches the top
    assert hb.next_job() == Job(0, 3)  # then the cycle starts again


def test_asha_promotes_when_in_the_top_third_and_never_idles():
    asha = ASHA(rungs(1, 9, 3), 3)
    values = {0: 5.0, 1: 1.0, 2: 9.0, 3: 0.5}
    for cid in range(3):
        job = asha.next_job()
        assert job == Job(0, 0)
        asha.add(cid, job)
        asha.finished(cid, 0, values[cid])
    # three results at rung 0: the best one (config 1) is in the top floor(3/3) = 1
    assert asha.next_job() == Job(1, 0, 1)
    asha.started(1, 1)
    assert asha.next_job() == Job(0, 0)  # nothing else to promote: a new configuration
    asha.add(3, Job(0, 0))
    asha.finished(3, 0, values[3])
    # config 3 is now best at rung 0 (top 1 of 4): promoted although config 1 still runs
    assert asha.next_job() == Job(1, 0, 3)
    # a failure is never promoted
    asha2 = ASHA(rungs(1, 9, 3), 3)
    for cid, v in enumerate([None, 2.0, 3.0]):
        asha2.add(cid, Job(0, 0))
        asha2.finished(cid, 0, v)
    assert asha2.next_job() == Job(1, 0, 1)
    asha3 = ASHA(rungs(1, 9, 3), 3)
    for cid in range(50):  # ASHA always has something for a free worker: a new configuration here
        job = asha3.next_job()
        assert job == Job(0, 0)
        asha3.add(cid, job)


def test_rung_sizes_are_exact_integers():
    hb = Hyperband(rungs(10, 10000, 3), 3)  # K = 6: 729 * 3^-6 must be 1, not 0.999...
    assert [hb.rung_size(6, i) for i in range(7)] == [729, 243, 81, 27, 9, 3, 1]
    sh = make_scheduler("sh", rungs(10, 10000, 3), 3)
    jobs = drive(sh, lambda cid, k: float(cid), limit=729 + 243 + 81 + 27 + 9 + 3 + 1)
    assert jobs[-1] == (0, 6)  # the best configuration reaches the top rung


def test_failures_shrink_the_next_synchronous_rung_instead_of_hanging_it():
    sh = make_scheduler("sh", rungs(1, 9, 3), 3)
    # 7 of 9 fail at rung 0: the two that succeeded go on (rung 1 expects min(3, 2) results)
    jobs = drive(sh, lambda cid, k: None if cid >= 2 and k == 0 else float(cid), limit=9 + 2 + 1)
    assert sorted(jobs[9:11]) == [(0, 1), (1, 1)] and jobs[11] == (0, 2)


def test_a_stopped_configuration_is_never_promoted():
    for name in ("asha", "sh"):
        s = make_scheduler(name, rungs(1, 9, 3), 3)
        for cid in range(9):
            s.add(cid, Job(0, 0))
            s.finished(cid, 0, float(cid))
        s.configs[0].stopped = True  # e.g. PRUNED when an earlier run's budget ran out
        job = s.next_job()
        assert job.config_id != 0 and (job.config_id == 1 or job.config_id is None), (name, job)
