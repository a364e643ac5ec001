"""The stage runner: resumable work units (in process and in a pool), output folders that are never a
user's, and command options that survive torchrun's argument parser."""
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.runner import STAMP, Resume, Unit, Work, check_out_dir, chunked, claim_dir, fingerprint, run_units
from stages.cli import main


class Square(Work):
    """x -> x * x; fails on ``fail_on`` (an interrupted run); records the inputs it computed."""

    def __init__(self, fail_on=None, log=None):
        self.fail_on, self.log = fail_on, log

    def __call__(self, x):
        if x == self.fail_on:
            raise PipelineError(f"unit {x} failed")
        if self.log is not None:
            self.log.append(x)
        return x * x


def units(n=6):
    return [Unit(f"u{i}", (i,)) for i in range(n)]


def test_an_interrupted_run_resumes_with_the_unfinished_units_only(tmp_path):
    with pytest.raises(PipelineError, match="unit 3 failed"):
        run_units(Square(fail_on=3), units(), Resume(tmp_path / "out.npz", "k"))
    assert sorted(p.name for p in (tmp_path / ".out.npz.partial" / "k").iterdir()) == ["u0.pkl", "u1.pkl", "u2.pkl"]
    log = []
    assert run_units(Square(log=log), units(), Resume(tmp_path / "out.npz", "k")) == [0, 1, 4, 9, 16, 25]
    assert log == [3, 4, 5]


def test_another_key_starts_afresh_and_close_removes_the_state(tmp_path):
    run_units(Square(), units(3), Resume(tmp_path / "out", "old"))
    log = []
    resume = Resume(tmp_path / "out", "new")
    assert not (tmp_path / ".out.partial" / "old").exists()
    run_units(Square(log=log), units(3), resume)
    assert log == [0, 1, 2]
    resume.close()
    assert not (tmp_path / ".out.partial").exists()


@pytest.mark.slow
def test_a_process_pool_gives_the_same_results_and_reports_unit_errors(tmp_path):
    assert run_units(Square(), units(), Resume(tmp_path / "a", "k"), workers=2) == [0, 1, 4, 9, 16, 25]
    with pytest.raises(PipelineError, match="unit 4 failed"):
        run_units(Square(fail_on=4), units(), Resume(tmp_path / "b", "k"), workers=2)


class ThreadPools(Work):
    """The sizes of this process's thread pools: torch's, and numpy's BLAS."""

    def __call__(self, _):
        import torch
        from threadpoolctl import threadpool_info

        return torch.get_num_threads(), {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.slow
def test_pool_workers_run_one_thread_each_and_a_stage_keeps_blas_at_one(tmp_path):
    from pipeline.core.runner import one_blas_thread

    assert run_units(ThreadPools(), units(2), Resume(tmp_path / "a", "k"), workers=2) == [(1, {1})] * 2
    one_blas_thread()
    assert ThreadPools()(0)[1] == {1}


class Pid(Work):
    """The id of the process that computed the unit (after a short nap, so no process takes them all)."""

    def __call__(self, _):
        import os
        import time

        time.sleep(0.3)
        return os.getpid()


@pytest.mark.slow
def test_this_process_works_beside_the_pool_from_the_back_of_the_list(tmp_path):
    import os

    pids = run_units(Pid(), units(8), Resume(tmp_path / "p", "k"), workers=2)
    assert pids[-1] == os.getpid() and pids[0] != os.getpid()
    assert len(set(pids)) == 2 and sorted(pids, key=lambda p: p == os.getpid()) == pids  # pool: a prefix


def test_chunks_cover_the_indices_in_order():
    c = chunked(range(7), 3)
    assert [u.args[0] for u in c] == [[0, 1, 2], [3, 4, 5], [6]] and [u.size for u in c] == [3, 3, 1]
    assert len({u.uid for u in c}) == 3


def test_claim_dir_never_removes_a_folder_it_did_not_make(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    with pytest.raises(PipelineError, match="was not made by selfment; nothing was changed"):
        claim_dir(user, "k")
    assert [p.name for p in user.iterdir()] == ["thesis.txt"]
    assert check_out_dir(user, allow=frozenset({"thesis.txt"})) == user  # only expected entries: accepted
    (tmp_path / "file").write_text("x")
    with pytest.raises(PipelineError, match="is not a folder"):
        claim_dir(tmp_path / "file", "k")

    ours = claim_dir(tmp_path / "empty", "k")  # absent (or empty): created and stamped
    (ours / "a.png").write_text("map")
    assert claim_dir(ours, "k") == ours and (ours / "a.png").exists()  # same key: kept (resume)
    claim_dir(ours, "other")  # made by the project with other inputs: emptied
    assert sorted(p.name for p in ours.iterdir()) == [STAMP]
    (ours / "b.png").write_text("map")
    claim_dir(ours)  # no key (segment): maps of earlier runs stay
    assert (ours / "b.png").exists()


def test_no_stage_option_is_an_abbreviation_of_a_torchrun_option():
    """torchrun parses `--log` after the program name as an ambiguous abbreviation of its `--log-dir`/
    `--logs-specs`; an option that is a prefix of one of torchrun's is therefore unusable under launch."""
    from torch.distributed.run import get_args_parser

    theirs = {o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")}
    ours = {o for name in main.list_commands(None) for p in main.get_command(None, name).params
            for o in p.opts if o.startswith("--")}
    assert ours and not {(o, t) for o in ours for t in theirs if t.startswith(o)}
    assert any(t.startswith("--log") for t in theirs)  # the clash this guards against is real


def test_sections_add_up_and_the_process_age_runs_from_its_start():
    import time

    from pipeline.core import timing

    for _ in range(2):
        with timing.section("nap"):
            time.sleep(0.05)
    assert 0.1 <= timing.sections()["nap_s"] < 0.5
    age = timing.process_age()
    time.sleep(0.05)
    assert 0.04 <= timing.process_age() - age < 0.5 and age > 0


def test_a_ranks_unlocked_state_is_never_swept_by_a_sibling_rank_but_another_runs_is(tmp_path):
    """Under torchrun each rank keeps its units in its own state; a rank starting first must not take a sibling's
    finished units (left unlocked by a killed job) for stale state, while a run of other inputs' state is."""
    from pipeline.core.runner import _unlock

    keys, other = [fingerprint("run", r, 2) for r in range(2)], fingerprint("other")
    for k in (other, keys[1]):
        left = Resume(tmp_path / "out", k, siblings=keys if k in keys else ())
        left.save("u1", [1])
        _unlock(left.root / f"{k[:16]}.lock")  # as a killed process leaves it
    assert not (tmp_path / f".out.partial/{other[:16]}").exists()  # swept by rank 1: another run's, ended
    Resume(tmp_path / "out", keys[0], siblings=keys)
    assert Resume(tmp_path / "out", keys[1], siblings=keys).done("u1")
