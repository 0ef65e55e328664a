"""POST /migrations with strategy `auto`: the server chooses (service.auto_strategy, faked
here: the lab test of `vmferry migrate --strategy auto` runs the real one), starts the move
with the chosen strategy and its reason, and holds a self-service user to its project's
strategies after the choice."""

from __future__ import annotations

from dataclasses import replace

from conftest import Api

from vmferry.model.migration import MigrationOptions
from vmferry.predict.strategy import MoveStrategy, StrategyChoice
from vmferry.service import projects


def choosing(api: Api, strategy: MoveStrategy) -> list[tuple[str, str, int]]:
    asked: list[tuple[str, str, int]] = []

    def choose(vm: str, to: str, options: MigrationOptions) -> StrategyChoice:
        asked.append((vm, to, options.max_downtime_ms))
        return StrategyChoice(strategy, f"{strategy} fits (fake)", 120)

    context = api.client.app.state.vmferry  # type: ignore[attr-defined]
    api.client.app.state.vmferry = replace(context, choose=choose)  # type: ignore[attr-defined]
    return asked


def test_auto_starts_the_chosen_strategy_with_its_reason(api: Api) -> None:
    asked = choosing(api, MoveStrategy.WARM)
    done = api.client.post("/api/v1/migrations", headers=api.as_("operator"),
                           json={"vm": "web1", "to": "kvm2", "strategy": "auto",
                                 "max_downtime_ms": 150})  # fmt: skip
    assert done.status_code == 202, done.text
    assert done.json()["options"]["strategy"] == "warm"
    assert asked == [("web1", "kvm2", 150)]
    assert api.migrate.calls == [("web1", "kvm2", "warm")]
    assert api.migrate.reasons == ["warm fits (fake)"]


def test_auto_holds_self_service_to_its_strategies_after_the_choice(api: Api) -> None:
    projects.set_policy(api.store, "web", "live", ["always"])
    choosing(api, MoveStrategy.COLD)
    refused = api.client.post("/api/v1/migrations", headers=api.as_("selfweb"),
                              json={"vm": "web1", "to": "kvm2", "strategy": "auto"})  # fmt: skip
    assert refused.status_code == 403, refused.text
    assert refused.json()["rule"] == "self-service.strategy"
    assert api.migrate.calls == []
    choosing(api, MoveStrategy.LIVE)
    allowed = api.client.post("/api/v1/migrations", headers=api.as_("selfweb"),
                              json={"vm": "web1", "to": "kvm2", "strategy": "auto"})  # fmt: skip
    assert allowed.status_code == 202, allowed.text
    assert api.migrate.calls == [("web1", "kvm2", "live")]


def test_auto_starts_the_chosen_stream(api: Api) -> None:
    """A live choice with a stream (multifd channels, zstd) starts the move with it."""
    context = api.client.app.state.vmferry  # type: ignore[attr-defined]
    api.client.app.state.vmferry = replace(  # type: ignore[attr-defined]
        context, choose=lambda vm, to, options: StrategyChoice(
            MoveStrategy.LIVE, "live fits; stream: 4 multifd channels (fake)", 80,
            parallel=4, compression="zstd"))  # fmt: skip
    done = api.client.post("/api/v1/migrations", headers=api.as_("operator"),
                           json={"vm": "web1", "to": "kvm2", "strategy": "auto"})  # fmt: skip
    assert done.status_code == 202, done.text
    options = done.json()["options"]
    assert (options["strategy"], options["parallel"], options["compression"]) == (
        "live", 4, "zstd")  # fmt: skip
