"""What the study samples, with the fake worker: the grid when the space fits, one-knob-at-a-time
screening (threads, then declared knobs) and the pruner."""

from __future__ import annotations

import optuna
from helpers import KNOB_STUDY, load_study, run_search, run_trials


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
    # a grid with known throughputs (the fake's peak shape, x the defaults): intra 0, 1, 2 give
    # 1.0, 0.6, 1.2, times inter 0, 1, 2, 4: 1.0, 1.083, 1.0, 0.9. At prune_ratio 0.6, (1, 4) at
    # 0.54 is below the bar whatever ran before it (the baseline, 1.0, runs first); every point
    # with intra 0 or 2 (0.9x and more) is above it even against the best, 1.3
    monkeypatch.setenv("FAKE_NOISE", "0.001")
    path = write_config(KNOB_STUDY.format(n=14, sampler="grid").replace(
        "  intra_op_parallelism_threads: default\n  inter_op_parallelism_threads: default",
        "  intra_op_parallelism_threads: [1, 2]\n  inter_op_parallelism_threads: [1, 4]").replace(
        "knobs:\n  map_parallelism: [1, 2, 4, autotune]\n  prefetch: [1, autotune]\n", "").replace(
        "  sampler: grid", "  sampler: grid\n  prune_ratio: 0.6"))
    run_trials(path)
    trials = load_study().trials
    by_point = {(t.params.get("intra_op_parallelism_threads"),
                 t.params.get("inter_op_parallelism_threads")): t for t in trials
                if "intra_op_parallelism_threads" in t.params and not t.user_attrs.get("role")}
    assert (1, 4) in by_point and len([p for p in by_point if p[0] in (0, 2)]) >= 6, by_point
    pruned = {p for p, t in by_point.items() if t.state == optuna.trial.TrialState.PRUNED}
    assert (1, 4) in pruned
    assert not [p for p in pruned if p[0] in (0, 2)], pruned
    best = max(t.value for t in trials if t.value is not None)
    for point in pruned:   # each pruned on what it measured, below the bar
        t = by_point[point]
        assert max(t.intermediate_values.values()) < 0.6 * best
        assert t.user_attrs.get("prune_reason")
