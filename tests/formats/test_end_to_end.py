"""One real run per format: ``execute_spec`` with the command agent
(tests/fixtures/agents/fake_agent.py) on a copy of each fixture, then the user's file compared
byte for byte with what the run must have written into it — and nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.execute_spec import execute_spec
from tasks_lib.formats import load_spec
from tasks_lib.spec import TaskStatus
from tests.fixtures.fake import fake_config

from .conftest import changed_lines

ROOT = Path(__file__).resolve().parents[2]


async def run(path: Path, tmp_path: Path, plan: dict[str, str] | None = None, **kw):
    repo = tmp_path / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    trace = tmp_path / "trace.jsonl"
    agent = fake_config(trace, plan)
    state = await execute_spec(
        str(path),
        agent=agent,
        repo=str(repo),
        timeout_seconds=20,
        retries=0,
        return_state=True,
        **kw,
    )
    result = await state.result(raise_on_failure=False)
    ran = [json.loads(x)["task"] for x in trace.read_text().splitlines()] if trace.exists() else []
    return result, ran


async def test_task_master(fixture_copy, tmp_path):
    root = fixture_copy("taskmaster/tagged")
    path = root / ".taskmaster" / "tasks" / "tasks.json"
    before = path.read_bytes()
    result, ran = await run(root, tmp_path, {"5": "fail"})
    # 1 is done and 4 in review (not run), 8 cancelled, 6 deferred and 7 waits for it
    assert sorted(ran) == ["2", "3", "5", "9"]
    assert result["status"] == "partial"
    assert {t: v["status"] for t, v in result["tasks"].items()} == {
        "1": "done",
        "2": "pass",
        "3": "pass",
        "4": "done",
        "5": "fail",
        "8": "done",
        "9": "pass",
    }
    data = json.loads(path.read_bytes())
    tasks = {t["id"]: t for t in data["master"]["tasks"]}
    assert {i: t["status"] for i, t in tasks.items()} == {
        1: "done",
        2: "done",
        3: "done",
        4: "review",
        5: "blocked",
        6: "deferred",
        7: "pending",
        8: "cancelled",
        9: "done",
    }
    assert [s["status"] for s in tasks[2]["subtasks"]] == ["done"] * 3
    assert [s["status"] for s in tasks[3]["subtasks"]] == ["done"] * 3
    # every changed line is a status value; everything else (other tag, metadata) is as it was
    for old, new in changed_lines(before, path.read_bytes()).values():
        assert re.fullmatch(rb'\s*"status": "[a-z-]+",?', old)
        assert re.fullmatch(rb'\s*"status": "(done|blocked)",?', new)
    assert data["feature-checkout"] == json.loads(before)["feature-checkout"]
    # the run record sits next to the file and keeps what tasks.json cannot
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == path.parent / ".specwave" / "runs"
    prompt = (run_dir / "tasks" / "2" / "prompt.md").read_text()
    assert "Set up the database layer" in prompt and "Use Prisma with PostgreSQL" in prompt
    assert "- [x] 2.1 Define the Prisma schema" in prompt
    assert "- [ ] 2.3 Write the seed script" in prompt
    assert "Run prisma validate" in prompt and "../docs/prd.txt" in prompt
    again = load_spec(root)
    assert again.unit("5").status == TaskStatus.BLOCKED and again.unit("5").attempts == 1


async def test_spec_kit(fixture_copy, tmp_path):
    folder = fixture_copy("speckit/specs/001-photo-albums")
    path = folder / "tasks.md"
    before = path.read_text()
    result, ran = await run(folder, tmp_path, {"T012": "fail"})
    assert result["status"] == "partial"
    # T012 failed: T013 waits for it and is blocked. T014 is marked done ("✅"), but the
    # next phase (T015, T016) still comes after T013 in the file, so it waits and is blocked
    assert sorted(ran) == [
        "T003",
        "T004",
        "T005",
        "T006",
        "T007",
        "T008",
        "T009",
        "T010",
        "T011",
        "T012",
    ]
    after = path.read_text()
    lines = after.splitlines()
    assert "- [X] T003 [P] Configure ruff and pytest in pyproject.toml" in lines
    assert (
        "- [X] T011 [P] [US1] Add album fields to src/models/album.py (created_at, cover)" in lines
    )
    assert (
        "- [ ] T015 [P] Documentation updates in docs/ — specwave: blocked: blocked by "
        "T012: tests fail" in lines
    )
    assert (
        "- [ ] T016 Run quickstart.md validation — specwave: blocked: blocked by T012: "
        "tests fail" in lines
    )
    assert (
        "- [ ] T012 [P] [US1] Create the Photo model in src/models/photo.py — specwave: "
        "failed: tests fail" in lines
    )
    assert (
        "- [ ] T013 [US1] Implement AlbumService in src/services/album_service.py (depends "
        "on T010, T012) — specwave: blocked: blocked by T012: tests fail" in lines
    )
    assert "- [ ] **T014** [US1] Implement POST /albums in src/api/albums.py ✅" in lines

    # a second run: the failed task passes now, notes go away, boxes get ticked
    result, ran = await run(folder, tmp_path / "second", {})
    assert result["status"] == "success"
    assert sorted(ran) == ["T012", "T013", "T015", "T016"]
    expected = before
    for tid in (
        "T003",
        "T004",
        "T005",
        "T006",
        "T007",
        "T008",
        "T009",
        "T010",
        "T011",
        "T012",
        "T013",
        "T015",
        "T016",
    ):
        expected = expected.replace(f"- [ ] {tid} ", f"- [X] {tid} ", 1)
    assert path.read_text() == expected


async def test_agent_os_tasks_md(fixture_copy, tmp_path):
    root = fixture_copy("agentos_md/project")
    folder = root / ".agent-os" / "specs" / "2025-01-29-password-reset"
    path = folder / "tasks.md"
    before = path.read_bytes()
    result, ran = await run(folder, tmp_path, {"4": "blocked"})
    assert ran == ["2", "4"]  # 1 and 3 are ticked; in order: 2 before 4
    assert result["status"] == "partial"
    diff = changed_lines(before, path.read_bytes())
    assert {n: new.decode() for n, (_, new) in diff.items()} == {
        15: "- [x] 2. **Build the password reset email**",
        16: "  - [x] 2.1 Write tests for send_password_reset_email",
        19: "  - [x] 2.2 Implement the template in app/templates/reset.html",
        20: "  - [x] 2.3 Verify all tests pass",
        27: "- [ ] 4. Add the confirm endpoint — specwave: blocked: needs a decision",
    }
    prompt = (Path(result["run_dir"]) / "tasks" / "2" / "prompt.md").read_text()
    assert "use the FakeEmailClient fixture" in prompt
    assert "spec.md, sub-specs/technical-spec.md" in prompt


@pytest.mark.parametrize("parallel, waves", [(False, 2), (True, 1)])
async def test_agent_os_tasks_md_parallel(tmp_path, parallel, waves):
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "tasks.md").write_text("## Tasks\n- [ ] 1. a\n- [ ] 2. b\n")
    result, ran = await run(folder, tmp_path, parallel=parallel)
    assert result["status"] == "success" and sorted(ran) == ["1", "2"]
    assert (
        len(json.loads((Path(result["run_dir"]) / "run.json").read_text())["plan"]["waves"])
        == waves
    )
    assert (folder / "tasks.md").read_text() == "## Tasks\n- [x] 1. a\n- [x] 2. b\n"


async def test_task_master_other_tag(fixture_copy, tmp_path):
    root = fixture_copy("taskmaster/tagged")
    path = root / ".taskmaster" / "tasks" / "tasks.json"
    before = json.loads(path.read_bytes())
    result, ran = await run(root, tmp_path, tag="feature-checkout")
    assert result["status"] == "success" and sorted(ran) == ["14", "15", "17"]
    after = json.loads(path.read_bytes())
    assert after["master"] == before["master"]
    assert [t["status"] for t in after["feature-checkout"]["tasks"]] == ["done"] * 3
    assert load_spec(root, tag="feature-checkout").name == "tagged:feature-checkout"
