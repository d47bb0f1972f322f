"""The recipe search (l2l_registry.search): its space and hints, the Optuna study (the defaults
first, trials scored on validation tasks, pruning), nested MLflow runs and the published
version's record, resuming an interrupted study, the CLI, and the service's path and its 422s.

Everything is tiny: 2-3 trials of a few meta-iterations on 4-dimensional quadratics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("optuna")

import optuna  # noqa: E402

from l2l_plugin.training import MetaTrainCallback, MetaTrainConfig, MetaTrainProgress, meta_train  # noqa: E402
from l2l_quadratic import QuadraticFamily  # noqa: E402
from l2l_registry.search.space import SearchSpace, SearchSpaceError  # noqa: E402
from l2l_registry.search.spec import SearchSpec  # noqa: E402
from l2l_registry.search.study import DEFAULTS_ATTR, RecipeSearch  # noqa: E402

from helpers import TINY_META  # noqa: E402

FAMILY_CONFIG = {"dim": 4}
# Iteration-bound trials (the time cap never binds), so a trial's score can be reproduced.
SPEC = {"trials": 3, "budget": 120, "trial_iterations": 6, "pruner": "none"}
# Small and quick for every candidate: paper preset only (no warm-start tuning), fixed meta-batch.
QUICK_SPACE = {"preset": "paper", "meta_batch_size": {"choices": [1, 2]}}


def overrides() -> dict[str, Any]:
    return json.loads(json.dumps(TINY_META))


def search(tmp_path: Path, name: str = "s", family: QuadraticFamily | None = None, **spec: Any) -> RecipeSearch:
    return RecipeSearch(
        family or QuadraticFamily(**FAMILY_CONFIG),
        overrides(),
        SearchSpec.model_validate({**SPEC, "space": QUICK_SPACE, **spec}),
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name=name,
    )


# -- the space ----------------------------------------------------------------------------------


def test_the_space_is_narrowed_by_hints_and_skips_what_the_user_set() -> None:
    space = SearchSpace.build(100, [{"meta_lr": {"low": 1e-3, "high": 1e-2}}, {"preset": "l2l"}], pinned={"network": {"output_scale": 0.3}})
    knobs = {knob.name: knob for knob in space.knobs}
    assert (knobs["meta_lr"].low, knobs["meta_lr"].high) == (1e-3, 1e-2)
    assert knobs["preset"].choices == ("l2l",)
    assert "output_scale" not in knobs  # the user's own value is not searched
    assert knobs["unroll_length"].choices == ("full", 10, 20, 50)  # the divisors of the horizon below it


@pytest.mark.parametrize(
    ("hints", "message"),
    [
        ({"bogus": 1}, "not a knob of the search space; knobs: preset, meta_lr"),
        ({"meta_lr": {"low": 1e-6}}, "outside the declared range"),
        ({"preset": {"choices": ["adam"]}}, "not among the choices ['l2l', 'paper']"),
        ({"preset": {"low": 1, "high": 2}}, "is categorical"),
        ({"meta_lr": {"low": 1e-2, "high": 1e-3}}, "is below low"),
    ],
)
def test_bad_hints_are_clear_errors(hints: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SearchSpace.build(100, [hints])


class HintedQuadratic(QuadraticFamily):
    """A family whose hints fix the preset and the schedule, and narrow the meta-batch (the documented hook)."""

    meta_train_search_hints: ClassVar[dict[str, Any]] = {
        "preset": "paper", "meta_lr_schedule": "constant", "meta_batch_size": {"choices": [1, 2]},
    }


def test_a_familys_hints_narrow_every_trial(tmp_path: Path) -> None:
    outcome = search(tmp_path, family=HintedQuadratic(**FAMILY_CONFIG), space={}).run()
    searched = [t for t in outcome.trials if not t.defaults]
    assert searched and all(t.labels["preset"] == "paper" and t.labels["meta_lr_schedule"] == "constant" for t in searched)
    assert not any("meta_batch_size" in t.labels for t in searched)  # the user's overrides set it: not searched


# -- the study ------------------------------------------------------------------------------------


def test_the_defaults_run_first_and_every_trial_is_scored_on_the_validation_tasks(tmp_path: Path) -> None:
    recipe_search = search(tmp_path)
    outcome = recipe_search.run()
    assert [t.state for t in outcome.trials] == ["COMPLETE"] * 3
    assert outcome.trials[0].defaults and outcome.trials[0].labels == {}
    assert not any(t.defaults for t in outcome.trials[1:])
    # A trial's score is the best validation loss of its meta-training, reproduced here.
    for trial in outcome.trials:
        config = recipe_search.config_for(recipe_search.trial_overrides(recipe_search.recipe(trial.labels), 120))
        assert meta_train(QuadraticFamily(**FAMILY_CONFIG), config).best_validation_loss == pytest.approx(trial.value)
    best = min(outcome.trials, key=lambda t: t.value)
    assert outcome.best_value == best.value and outcome.default_value == outcome.trials[0].value
    assert outcome.improved == (not best.defaults)
    final = recipe_search.final_config(outcome)
    # The full training keeps the defaults' measuring stick: horizon, budget, validation, evaluation.
    base = recipe_search.base
    assert (final.horizon, final.meta_iterations, final.validation_tasks, final.evaluation) == (
        base.horizon, base.meta_iterations, base.validation_tasks, base.evaluation,
    )
    if outcome.improved:
        assert "trial" in outcome.message() and final.preset == "paper"
    else:
        assert "nothing better than the defaults" in outcome.message() and final == base


def test_lagging_trials_are_pruned_on_their_validation_losses(tmp_path: Path) -> None:
    # Candidates that cannot move (a tiny output and meta learning rate) while the defaults
    # improve; a median pruner that compares from the first finished trial on.
    space = {**QUICK_SPACE, "output_scale": 0.01, "meta_lr": 1e-4}
    recipe_search = search(tmp_path, space=space, pruner="median", startup_trials=1)
    outcome = recipe_search.run()
    study = optuna.load_study(study_name="s", storage=recipe_search.storage_url)
    defaults = next(t for t in study.trials if t.user_attrs.get(DEFAULTS_ATTR))
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.state, t.intermediate_values) for t in study.trials]
    for trial in pruned:
        step, value = max(trial.intermediate_values.items())
        assert step < max(defaults.intermediate_values)  # stopped before its meta-training ended
        assert value > defaults.intermediate_values[step]  # behind the only finished trial there
    assert outcome.counts.get("pruned") == len(pruned)


class Interrupt(MetaTrainCallback):
    """Ctrl-C in the middle of the second trial's meta-training."""

    def __init__(self) -> None:
        self.trials_seen = 0

    def on_validation(self, progress: MetaTrainProgress) -> None:
        if progress.iteration == 0:
            self.trials_seen += 1
        elif self.trials_seen == 2:
            raise KeyboardInterrupt


def test_an_interrupted_study_resumes_where_it_stopped(tmp_path: Path) -> None:
    first = search(tmp_path)
    first.callbacks = [Interrupt()]
    with pytest.raises(KeyboardInterrupt):
        first.run()
    study = optuna.load_study(study_name="s", storage=first.storage_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]

    started: list[int] = []

    class Observer:
        def trial_started(self, number: int, labels: Any, config: MetaTrainConfig) -> MetaTrainCallback:
            started.append(number)
            return MetaTrainCallback()

        def trial_finished(self, number: int, state: str, value: float | None) -> None:
            pass

    again = search(tmp_path)
    again.observer = Observer()
    outcome = again.run()
    assert started == [2, 3]  # the finished trial is not run again; the interrupted one is replaced
    assert [t.state for t in outcome.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert sum(t.defaults for t in outcome.trials) == 1  # the defaults were enqueued once


class CrashOnce(MetaTrainCallback):
    """The second trial's meta-training raises (a bug in one candidate's path)."""

    def __init__(self) -> None:
        self.trials_seen = 0

    def on_validation(self, progress: MetaTrainProgress) -> None:
        if progress.iteration == 0:
            self.trials_seen += 1
            if self.trials_seen == 2:
                raise RuntimeError("boom")


def test_a_crashing_trial_is_failed_and_counted_and_the_search_goes_on(tmp_path: Path) -> None:
    recipe_search = search(tmp_path)
    recipe_search.callbacks = [CrashOnce()]
    outcome = recipe_search.run()
    assert [t.state for t in outcome.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    study = optuna.load_study(study_name="s", storage=recipe_search.storage_url)
    assert study.trials[1].user_attrs["l2l.error"] == "RuntimeError: boom"
    assert outcome.best_trial in (0, 2)


# -- tracking, publishing, the CLI ------------------------------------------------------------------


def test_trials_are_nested_runs_and_the_version_records_the_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_api_support import isolated_mlflow

    from l2l_plugin.cli import main

    with isolated_mlflow(tmp_path / "mlflow"):
        from mlflow import MlflowClient

        from l2l_registry.search.run import SearchRun
        from l2l_registry.store import configure

        store = configure()
        run = SearchRun(
            "quadratic", FAMILY_CONFIG, overrides(), SearchSpec.model_validate({**SPEC, "space": QUICK_SPACE}),
            storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="nested", store=store,
        )
        outcome = run.run_search()
        trained, published = run.train_and_publish(tmp_path / "out")

        client = MlflowClient(store.tracking_uri)
        parent = client.get_run(published.run_id)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{published.run_id}'"
        )
        assert len(children) == 3
        for child in children:
            assert child.data.tags["l2l.search.state"] == "COMPLETE" and child.data.tags["l2l.search.pruned"] == "false"
            assert child.info.status == "FINISHED"
            assert len(client.get_metric_history(child.info.run_id, "validation_loss")) >= 2  # its curve
            if child.data.tags["l2l.search.defaults"] == "false":
                assert child.data.params["search.preset"] == "paper"
        # The version, its run and its manifest say where the recipe came from.
        version = client.get_model_version("l2l-quadratic", published.version)
        tag = json.loads(version.tags["l2l.search"])
        assert tag["trials"] == 3 and tag["improved"] == outcome.improved and tag["study"] == "nested"
        assert json.loads(parent.data.tags["l2l.search"])["best_trial"] == outcome.best_trial
        manifest = json.loads((trained.optimizer_dir / "optimizer.json").read_text())
        assert manifest["provenance"]["search"]["recipe"] == outcome.overrides
        assert parent.data.params["meta.meta_iterations"] == str(TINY_META["meta_iterations"])

        assert main(["optimizers", "quadratic"]) == 0
        listing = capsys.readouterr().out
        assert "SEARCH" in listing and f"3 trials: {'searched' if outcome.improved else 'defaults'}" in listing


def test_the_cli_searches_then_trains_and_resumes_a_finished_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from l2l_plugin.cli import main

    meta = [f"--meta={key}={json.dumps(value)}" for key, value in overrides().items()]
    args = ["meta-train", "quadratic", "--set", "dim=4", *meta, "--out", str(tmp_path / "run"), "--quiet",
            "--search", "trials=2,budget=60,trial_iterations=3,pruner=none"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "search l2l-quadratic-" in out and "2 trials (2 complete)" in out
    assert (tmp_path / "run" / "search.db").is_file() and (tmp_path / "run" / "optimizer" / "optimizer.json").is_file()
    assert main(args) == 0  # the same command: the study is done, nothing runs again
    assert "2 trials (2 complete)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("search_arg", "message"),
    [("trials=0", "invalid configuration"), ("trials=2,bogus=1", "bogus"), ("trials", "expected key=value")],
)
def test_the_cli_rejects_a_bad_search(tmp_path: Path, capsys: pytest.CaptureFixture[str], search_arg: str, message: str) -> None:
    from l2l_plugin.cli import main

    assert main(["meta-train", "quadratic", "--out", str(tmp_path), "--search", search_arg]) == 2
    assert message in capsys.readouterr().err


# -- the service -------------------------------------------------------------------------------------

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    from test_api_support import TOKEN, api_client, auth, isolated_mlflow, wait_for

    root = tmp_path_factory.mktemp("api-search")
    with isolated_mlflow(root / "mlflow"), api_client(
        root / "data", workers=1, token=TOKEN, max_search_trials=4, max_search_seconds=600
    ) as client:
        wait_for(lambda: client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 60)
        yield client


def post(client: Any, search: Any) -> Any:
    from test_api_support import auth, tiny_request

    return client.post("/meta-train", json=tiny_request(search=search), headers=auth())


@pytest.mark.parametrize(
    ("search", "loc", "message"),
    [
        ({"trials": 5}, ["body", "search", "trials"], "exceeds this service's limit of 4"),
        ({"budget": 601}, ["body", "search", "budget"], "limit of 600"),
        ({"space": {"bogus": 1}}, ["body", "search", "space", "bogus"], "knobs: preset, meta_lr"),
        ({"space": {"meta_lr": {"low": 10}}}, ["body", "search", "space", "meta_lr"], "outside the declared range"),
        ({"trials": 2, "storage": "sqlite:////etc/x.db"}, ["body", "search", "storage"], "Extra inputs"),
        ({"budget": 10, "trial_seconds": 20}, ["body", "search"], "exceeds the search budget"),
    ],
)
def test_the_service_rejects_a_bad_search_with_field_errors(service: Any, search: dict, loc: list, message: str) -> None:
    response = post(service, search)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(error["loc"][: len(loc)] == loc and message in error["msg"] for error in errors), errors


def test_a_search_job_runs_its_trials_then_publishes(service: Any) -> None:
    from test_api_support import TERMINAL, wait_for

    response = post(service, {"trials": 2, "budget": 120, "trial_iterations": 3, "pruner": "none", "space": QUICK_SPACE})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["search"]["trials"] == 2
    job = wait_for(lambda: service.get(f"/jobs/{job['id']}").json(), lambda j: j["state"] in TERMINAL, 240)
    assert job["state"] == "succeeded", job
    summary = job["result"]["search"]
    assert summary["trials"] == 2 and summary["states"] == {"complete": 2} and summary["study"] == f"l2l-job-{job['id']}"
    assert ("nothing better than the defaults" in summary["message"]) == (not summary["improved"])
    assert job["result"]["model_version"] is not None

    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(job["mlflow_run_id"])
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{job['mlflow_run_id']}'"
    )
    assert len(children) == 2 and run.info.status == "FINISHED"
    versions = service.get("/optimizers/quadratic").json()["versions"]
    version = next(v for v in versions if v["version"] == job["result"]["model_version"])
    assert json.loads(version["tags"]["l2l.search"])["trials"] == 2


def test_studies_live_beside_a_sqlite_job_store_or_in_the_job_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from l2l_api.search import search_storage_url

    monkeypatch.delenv("L2L_API_SEARCH_STORAGE_URL", raising=False)
    assert search_storage_url("sqlite:////srv/l2l/api/jobs.db") == "sqlite:////srv/l2l/api/search.db"
    postgres = "postgresql://user:secret@db:5432/l2l"
    assert search_storage_url(postgres) == postgres  # the password survives: the workers connect with it
    with pytest.raises(ValueError, match="in-memory"):
        search_storage_url("sqlite://")
    monkeypatch.setenv("L2L_API_SEARCH_STORAGE_URL", "postgresql://db/l2l_search")  # compose's
    assert search_storage_url("sqlite:////srv/l2l/api/jobs.db") == "postgresql://db/l2l_search"


def test_the_warm_start_is_tuned_once_per_search_and_gives_the_same_trial(tmp_path: Path) -> None:
    l2l = {**overrides(), "preset": "l2l", "unroll_length": None}
    recipe_search = RecipeSearch(
        QuadraticFamily(**FAMILY_CONFIG), l2l, SearchSpec(trials=2, budget=60),
        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="warm",
    )
    config = recipe_search.config_for(recipe_search.trial_overrides(recipe_search.recipe({}), 60))
    cached = recipe_search.warm_started(config)
    assert config.warm_start == "tuned_nominal" and cached.warm_start == "none"
    assert cached.network.nominal_lr != config.network.nominal_lr  # the tuned rate
    family = QuadraticFamily(**FAMILY_CONFIG)
    assert meta_train(family, cached).best_validation_loss == meta_train(family, config).best_validation_loss
    other = config.model_copy(update={"meta_lr": 0.01})  # another candidate, same tuning
    assert recipe_search.warm_started(other).network.nominal_lr == cached.network.nominal_lr
    assert len(recipe_search._warm_starts) == 1
    # The winner's full training reuses it too: the same start, no third tuning.
    train = recipe_search.config_for(recipe_search._train_overrides(recipe_search.recipe({})))
    assert train.warm_start == "none" and train.network.nominal_lr == cached.network.nominal_lr
    assert train.max_seconds == recipe_search.base.max_seconds  # the full budget, not a trial's


def _search_process(storage: str, started: Any) -> None:
    """One of two worker processes sharing a study."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    recipe_search = RecipeSearch(
        QuadraticFamily(**FAMILY_CONFIG), overrides(), SearchSpec.model_validate({**SPEC, "trials": 4, "space": QUICK_SPACE}),
        storage=storage, study_name="shared",
    )

    class Count:
        def trial_started(self, number: int, labels: Any, config: MetaTrainConfig) -> MetaTrainCallback:
            started.put((os.getpid(), number))
            return MetaTrainCallback()

        def trial_finished(self, number: int, state: str, value: float | None) -> None:
            pass

    recipe_search.observer = Count()
    recipe_search.run()


def test_two_processes_share_one_study(tmp_path: Path) -> None:
    import multiprocessing

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    RecipeSearch(  # created once, so neither process races to create it
        QuadraticFamily(**FAMILY_CONFIG), overrides(), SearchSpec(**SPEC), storage=storage, study_name="shared"
    ).study()
    context = multiprocessing.get_context("spawn")
    started = context.Queue()
    processes = [context.Process(target=_search_process, args=(storage, started)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
        assert process.exitcode == 0
    runs = []
    while not started.empty():
        runs.append(started.get())
    numbers = [number for _, number in runs]
    assert len(numbers) == len(set(numbers))  # no trial ran twice
    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(done) <= 5  # the total of the study, not of each process (one may overshoot by its last)
    assert sum(t.user_attrs.get(DEFAULTS_ATTR, False) for t in study.trials) == 1


def test_a_search_job_cancelled_while_searching_stops_and_its_run_is_killed(service: Any) -> None:
    from test_api_support import TERMINAL, auth, wait_for

    long_trials = {"trials": 3, "budget": 300, "trial_seconds": 100, "pruner": "none", "space": QUICK_SPACE}
    response = service.post(
        "/meta-train",
        json={"family": "quadratic", "family_config": FAMILY_CONFIG, "search": long_trials,
              "meta_overrides": {**overrides(), "meta_iterations": 20000, "validation_every": 1000}},
        headers=auth(),
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = wait_for(
        lambda: service.get(f"/jobs/{job_id}").json(),
        lambda j: j["progress"]["phase"] == "searching" and j["progress"]["iterations_done"] > 0,
        120,
    )
    assert job["progress"]["phase_total"] == 3
    assert service.delete(f"/jobs/{job_id}", headers=auth()).status_code in (200, 202)
    job = wait_for(lambda: service.get(f"/jobs/{job_id}").json(), lambda j: j["state"] in TERMINAL, 60)
    assert job["state"] == "cancelled" and job["stop_reason"] == "cancelled"

    from mlflow import MlflowClient

    assert MlflowClient().get_run(job["mlflow_run_id"]).info.status == "KILLED"
