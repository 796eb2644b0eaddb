"""Item 9: secrets. A run whose orchestrator holds ``ANTHROPIC_API_KEY=sk-ant-<random>`` and a
``GITHUB_TOKEN``, passed to agents that print them (stdout, stderr, a failing result, a reply
with no result block), writes neither value anywhere: not in any file under the spec folder
(tasks.json, the run folder's logs, attempt records, prompts, run.json), not in the CLI's
output, not in any Prefect log record, artifact, flow run parameter or state message.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from uuid import UUID

from tests.reliability.conftest import ROOT, TAG_ENV, load

EXAMPLE = ROOT / "examples" / "small-feature"


def every_file(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


async def prefect_records(flow_run_id: str) -> list[str]:
    """Every text the API holds about one flow run: logs, artifacts, parameters, states."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    out: list[str] = []
    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
        out.append(json.dumps(run.parameters, default=str))
        out.append(str(run.state.message if run.state else ""))
        offset = 0
        while True:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
                limit=200,
                offset=offset,
            )
            out += [log.message for log in logs]
            if len(logs) < 200:
                break
            offset += 200
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
        out += [json.dumps(a.data, default=str) + str(a.description or "") for a in arts]
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
        for t in tasks:
            out.append(t.name)
            if t.state is not None:
                out.append(str(t.state.message or ""))
    return out


def test_secrets_appear_nowhere(rig, tmp_path):
    key = "sk-ant-" + secrets.token_hex(24)
    token = "ghp_" + secrets.token_hex(18)
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    # 1 prints the secrets and passes; 2 prints them on stdout and stderr and fails;
    # 3 prints them and gives no result block (parse error: its output tail is recorded)
    agent = rig.agent(
        plan={"1": "secret", "2": "secret+stderr+fail", "3": "secret+garbage"},
        env_allow=["ANTHROPIC_API_KEY", "GITHUB_TOKEN"],
    )
    agent["command"] = agent["command"]  # argv list: the values are never on a command line
    proc = rig.cli(
        "run",
        str(spec),
        "--agent-json",
        json.dumps(agent),
        "--repo",
        str(rig.repo),
        "--retries",
        "0",
        "--json",
        "--verbose",
        env={"ANTHROPIC_API_KEY": key, "GITHUB_TOKEN": token},
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err  # 2 failed, 3 blocked behind it... not a success
    result = json.loads(out)
    assert result["tasks"]["1"]["status"] == "pass"
    assert result["tasks"]["2"]["status"] == "fail"

    # the agents did see the values (the test would prove nothing otherwise)
    logs = list((spec / ".specwave" / "runs").glob("*/tasks/*/attempt-*.log"))
    assert logs and all("***" in p.read_text() for p in logs if "/1/" in str(p)), logs

    found = []
    for p in every_file(spec):
        data = p.read_bytes()
        for value in (key, token):
            if value.encode() in data:
                found.append((str(p.relative_to(spec)), value[:8]))
    assert found == []
    for stream in (out, err):
        assert key not in stream and token not in stream

    flow_run_id = load(spec / ".specwave" / "locks" / "run.lock")["flow_run_id"]
    records = asyncio.run(prefect_records(flow_run_id))
    assert any("***" in r for r in records), "the redacted agent lines reach the API"
    leaks = [r[:120] for r in records if key in r or token in r]
    assert leaks == []


def test_a_secret_split_across_a_long_line_piece_is_still_redacted(rig, tmp_path):
    """A line longer than the 1 MiB piece size reaches the log in pieces; a secret that
    straddles two pieces must not survive in either file or log."""
    key = "sk-ant-" + secrets.token_hex(24)
    spec = tmp_path / "spec"
    shutil.copytree(EXAMPLE, spec)
    script = tmp_path / "agent.py"
    script.write_text(
        "import os, sys\n"
        "k = os.environ['ANTHROPIC_API_KEY']\n"
        "pad = (1 << 20) - len(k) // 2\n"
        "sys.stdout.write('x' * pad + k + '\\n')\n"
        'print(\'```json\\n{"status": "pass"}\\n```\\nTASK COMPLETE\')\n'
    )
    agent = {
        "kind": "command",
        "command": [sys.executable, str(script)],
        "env": {TAG_ENV: rig.tag},
        "env_allow": ["ANTHROPIC_API_KEY"],
        "grace_seconds": 1.0,
    }
    proc = rig.cli(
        "run",
        str(spec),
        "--agent-json",
        json.dumps(agent),
        "--repo",
        str(rig.repo),
        "--json",
        env={"ANTHROPIC_API_KEY": key},
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    found = [
        str(p.relative_to(spec))
        for p in every_file(spec)
        if key.encode() in p.read_bytes() or key[:20].encode() in p.read_bytes()
    ]
    assert found == []
    flow_run_id = load(spec / ".specwave" / "locks" / "run.lock")["flow_run_id"]
    records = asyncio.run(prefect_records(flow_run_id))
    assert [r[:80] for r in records if key in r or key[:20] in r] == []
    assert os.environ.get("ANTHROPIC_API_KEY") != key
