from __future__ import annotations

from pathlib import Path

import pytest

from orchestra import AgentSpec, Budget, ModelSpec, Pool, UserError
from orchestra.backends.priced import priced_model, priced_pool
from orchestra.testing import make_pool


def test_budget_rejects_non_positive_limits_with_the_value_and_fix() -> None:
    with pytest.raises(UserError) as e:
        Budget(usd=-1)
    assert "-1" in str(e.value) and "positive" in str(e.value)
    with pytest.raises(UserError):
        Budget(rounds=0)


def test_agent_template_with_unknown_placeholder_is_rejected() -> None:
    with pytest.raises(UserError) as e:
        AgentSpec(name="a", system_prompt="Hello {user_name}")
    assert "user_name" in str(e.value) and "allowed" in str(e.value)


def test_pool_cross_references_are_checked() -> None:
    m = ModelSpec(name="m", id="test/m", input_price=1, output_price=1)
    with pytest.raises(UserError) as e:
        Pool(models=(m,), agents=(AgentSpec(name="a", models=("nope",)),),
             refiner={"kind": "vote"})
    assert "'nope'" in str(e.value) and "known models" in str(e.value)


def test_malformed_yaml_names_the_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\nmodels:\n  - id: test/x\n    input_price: cheap\nagents: []\n")
    with pytest.raises(UserError) as e:
        Pool.from_yaml(f)
    msg = str(e.value)
    assert "bad.yaml" in msg and "input_price" in msg and "'cheap'" in msg


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("models: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        Pool.from_yaml(f)


def test_unknown_pool_name_lists_known_pools() -> None:
    with pytest.raises(UserError) as e:
        Pool.load("no-such-pool")
    assert "local" in str(e.value) and "hosted" in str(e.value)


def test_shipped_pools_load_and_are_priced() -> None:
    local = priced_pool(Pool.load("local"))
    assert {m.name for m in local.models} == {"smollm2", "gemma3"}
    assert all(m.input_price is not None and m.input_price > 0 for m in local.models)
    hosted = priced_pool(Pool.load("hosted"))
    # Prices of hosted models come from litellm's bundled cost map.
    assert hosted.model("gpt-4.1-mini").input_price == pytest.approx(0.4)


def test_missing_api_key_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    from orchestra import Orchestra

    with pytest.raises(UserError) as e:
        Orchestra("hosted", store=False)
    assert "OPENAI_API_KEY" in str(e.value) and "--pool local" in str(e.value)


def test_unknown_model_price_needs_explicit_prices() -> None:
    with pytest.raises(UserError, match="input_price"):
        priced_model(ModelSpec(id="someprovider/unknown-model-xyz"))


def test_model_lookup_errors_list_known_names() -> None:
    pool = make_pool()
    with pytest.raises(UserError, match="known models"):
        pool.model("gpt-9")
    with pytest.raises(UserError, match="known agents"):
        pool.agent("ghost")


def test_pool_round_trips_through_yaml(tmp_path: Path) -> None:
    pool = make_pool()
    f = tmp_path / "p.yaml"
    f.write_text(pool.to_yaml())
    again = Pool.from_yaml(f)
    assert [m.name for m in again.models] == [m.name for m in pool.models]
    assert again.model("m1").output_price == pool.model("m1").output_price
