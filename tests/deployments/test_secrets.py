"""Secrets for deployed runs come from Prefect Secret blocks (agent ``env_secrets``), the way the
docker deployment in prefect.yaml gets ANTHROPIC_API_KEY: the agent must receive the value, and
the value must never be written in plain text (logs, run records)."""

from __future__ import annotations

import uuid

from prefect.blocks.system import Secret

from flows.execute_spec import execute_spec
from tests.deployments.conftest import fake_agent


async def test_env_secrets_reach_the_agent_and_never_the_disk(spec_copy, tmp_path):
    value = "sk-ant-test-" + uuid.uuid4().hex
    block = f"anthropic-api-key-{uuid.uuid4().hex[:8]}"
    await Secret(value=value).save(block)
    spec = spec_copy("small-feature")
    agent = fake_agent(tmp_path / "trace.jsonl", default="secret")
    agent["env_secrets"] = {"ANTHROPIC_API_KEY": block}
    state = await execute_spec(
        spec_folder=str(spec), agent=agent, repo=str(tmp_path), return_state=True
    )
    assert state.is_completed(), state.message
    written = "\n".join(p.read_text(errors="replace") for p in spec.rglob("*") if p.is_file())
    assert "key: ***" in written  # the agent got the key (and it was redacted)
    assert value not in written
