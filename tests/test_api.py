"""The Python API gives a script what the CLI does: provisioning and jobs on the `local` node."""

from __future__ import annotations

from pathlib import Path

from edgectl import Fleet

PLAYBOOK = """
name = "api-check"
[[steps]]
name = "made"
dir = "${workdir}/made"
"""


def local_fleet(tmp_path: Path) -> tuple[Fleet, Path]:
    fleet = Fleet(tmp_path / "home")
    workdir = tmp_path / "workdir"
    fleet.set_fields("local", {"workdir": str(workdir)})
    return fleet, workdir


def test_provision_through_the_api_checks_changes_then_converges(tmp_path: Path) -> None:
    fleet, workdir = local_fleet(tmp_path)
    book = tmp_path / "book.toml"
    book.write_text(PLAYBOOK)

    check = fleet.provision(str(book), "local", check=True)
    assert check.summary()["steps_changed"] == 1
    assert not (workdir / "made").exists()

    first = fleet.provision(str(book), "local")
    assert first.summary()["steps_changed"] == 1
    assert (workdir / "made").is_dir()
    again = fleet.provision(str(book), "local")
    assert again.summary()["steps_changed"] == 0


def test_a_script_job_through_the_api_brings_its_result_home(tmp_path: Path) -> None:
    fleet, _ = local_fleet(tmp_path)
    source = tmp_path / "note.txt"
    source.write_text("edge\n")
    jobs = fleet.jobs
    job = jobs.submit(
        "script",
        [str(source)],
        selector="local",
        params={"run": "tr a-z A-Z < {input} > out/{stem}.up"},
    )
    jobs.run(job.id)
    assert jobs.show(job.id)["state"] == "done"
    where, files = jobs.results(job.id)
    assert [f["name"] for f in files] == ["note.up"]
    assert (where / "note.up").read_text() == "EDGE\n"
