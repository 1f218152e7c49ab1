"""What the study samples, with the fake worker: the grid when the space fits, one-knob-at-a-time
screening (threads, then declared knobs) and the pruner."""

from __future__ import annotations

import optuna
from helpers import (
    KNOB_STUDY,
    load_study,
    run_search,
    run_trials,
)


def test_auto_sampler_is_exhaustive_when_the_space_fits(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text() + "space:\n  intra_op_parallelism_threads: [1, 2, 3]\n"
                    "  inter_op_parallelism_threads: [1, 2]\n  tf_data:\n"
                    "    private_threadpool_size: default\n    max_intra_op_parallelism: default\n"
                    "  env:\n    TF_ENABLE_ONEDNN_OPTS: default\n    TF_XLA_FLAGS: default\n"
                    "  allocator: default\n"
                    "  instances: default\n")
    outcome = run_search(path, n_trials=20)
    assert outcome.tuned["search"]["sampler"] == "grid"
    space = outcome.tuned["search"]["space"]["searched"]
    assert space == {"intra_op_parallelism_threads": [0, 1, 2, 3],
                     "inter_op_parallelism_threads": [0, 1, 2]}
    seen = {(t.params["intra_op_parallelism_threads"], t.params["inter_op_parallelism_threads"])
            for t in load_study().trials}
    assert len(seen) == 12  # every grid point, and the grid stops the study when done
    assert len(load_study().trials) < 20


def test_tpe_searches_start_with_one_knob_at_a_time_thread_screening(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 12\n  sampler: tpe"))
    run_trials(path)
    trials = load_study().trials
    screen = [t for t in trials if t.user_attrs.get("role") == "screen"]
    assert [t.number for t in screen] == list(range(2, 2 + len(screen)))
    points = {(t.params["intra_op_parallelism_threads"], t.params["inter_op_parallelism_threads"])
              for t in screen}
    assert (1, 0) in points and (0, 1) in points          # each knob alone, the other default
    assert all(0 in p for p in points)
    assert all(t.params["env.TF_ENABLE_ONEDNN_OPTS"] is None for t in screen)
    assert len(points) == len(screen)


def test_small_budgets_skip_the_screening(fake_worker, write_config):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 8\n  sampler: tpe"))
    run_trials(path)
    assert not [t for t in load_study().trials if t.user_attrs.get("role") == "screen"]


def test_small_budgets_screen_the_declared_knobs_first(fake_worker, write_config):
    path = write_config(KNOB_STUDY.format(n=10, sampler="tpe"))
    run_trials(path)
    trials = optuna.load_study(study_name="study", storage="sqlite:///results/study.db").trials
    screened = [t.params for t in trials if t.user_attrs.get("role") == "screen"]
    # each listed value of each knob once, the others at the baseline (first candidates here)
    assert screened == [{"knobs.map_parallelism": 2, "knobs.prefetch": 1},
                        {"knobs.map_parallelism": 4, "knobs.prefetch": 1},
                        {"knobs.map_parallelism": "autotune", "knobs.prefetch": 1},
                        {"knobs.map_parallelism": 1, "knobs.prefetch": "autotune"}]


def test_pruning_stops_clearly_bad_trials(fake_worker, write_config, monkeypatch):
    path = write_config()
    path.write_text(path.read_text().replace("n_trials: 8", "n_trials: 14\n  sampler: random"))
    run_trials(path)
    pruned = [t for t in load_study().trials if t.state == optuna.trial.TrialState.PRUNED]
    # intra=1 runs at 0.6x and intra>4 at 0.7x of a 1.3x best: below 0.5 x best only with
    # inter=4 or 8 too; every pruned trial must really have been below the bar
    for t in pruned:
        assert max(t.intermediate_values.values()) < 0.5 * load_study().best_value * 1.1
