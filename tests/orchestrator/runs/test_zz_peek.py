import json
from coordstore import open_store
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from gitfixtures import make_repo
from runfixtures import task, write_experiment
from fixtures_path import PROGS

def test_peek(tmp_path, no_git_identity, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{PROGS}:{__import__('os').environ.get('PYTHONPATH', '')}")
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    agents = [{"id": "w1", "kind": "bestof_kinds:Writer"}, {"id": "w2", "kind": "bestof_kinds:Writer"},
              {"id": "w3", "kind": "bestof_kinds:Writer", "options": {"hang_s": 600}}]
    exp = write_experiment(tmp_path, [task("t1", ["a.txt"])], [],
                           {"policy": "best_of", "policy_options": {"n": 3, "wait_ms": 5000}, "agents": agents})
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    with open_store(out.spec.store_url) as s:
        for r in s.history(out.spec.run_id):
            if r.entity in ("task", "agent", "run"):
                print(r.seq, r.ts_ms % 100000, r.entity, r.entity_id, r.from_state, r.to_state, r.agent, r.reason, json.dumps(r.data)[:150])
    import subprocess
    print(subprocess.run(["bash", "-c", f"tail -5 {out.run_dir}/logs/*"], capture_output=True, text=True).stdout[-3000:])
