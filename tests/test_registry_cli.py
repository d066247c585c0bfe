"""Registry and command line: lazy imports, did-you-mean, one-line errors with exit code 2."""
import subprocess
import sys

import pytest

from unifybench.cli import main
from unifybench.errors import UserError
from unifybench.registry import BASELINES, BENCHMARKS, EVALUATORS, METHODS, Registry


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "unifybench.cli", *args], capture_output=True, text=True)


def test_ls_and_help_import_no_heavy_library():
    code = ("import sys; from unifybench.cli import main; main(['ls', 'methods']); "
            "heavy = [m for m in ('torch', 'transformers', 'open_clip', 'PIL') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    out = run_cli("--help")
    assert out.returncode == 0 and "run" in out.stdout


@pytest.mark.parametrize("kind,registry", [("methods", METHODS), ("baselines", BASELINES),
                                           ("benchmarks", BENCHMARKS), ("evaluators", EVALUATORS)])
def test_ls_lists_one_name_and_description_per_line(kind, registry, capsys):
    assert main(["ls", kind]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == registry.names()
    assert all(len(l.split("\t")) == 2 and l.split("\t")[1] for l in lines)


def test_every_registered_target_imports():
    for registry in (METHODS, BASELINES, BENCHMARKS, EVALUATORS):
        for name in registry.names():
            cls = registry.get(name)
            assert getattr(cls, "name", name) == name


def test_typo_gets_did_you_mean():
    with pytest.raises(UserError, match="did you mean 'yochameleon'"):
        METHODS.entry("yochamelon")


def test_unknown_method_is_one_line_exit_2():
    out = run_cli("run", "--method", "yochamelon", "--preset", "tiny")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "did you mean 'yochameleon'" in out.stderr


def test_unknown_benchmark_and_missing_root_exit_2(tmp_path):
    out = run_cli("run", "--method", "random", "--benchmark", "unifybenchh", "--output-dir", str(tmp_path))
    assert out.returncode == 2 and "did you mean 'unifybench'" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("run", "--method", "random", "--benchmark", "unifybench", "--data-root",
                  str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o"))
    assert out.returncode == 2 and "nowhere" in out.stderr and "Traceback" not in out.stderr


def test_register_twice_with_another_target_fails():
    r = Registry("things")
    r.register("a", "x:A", "first")
    r.register("a", "x:A", "same again is fine")
    with pytest.raises(ValueError):
        r.register("a", "y:B", "clash")


def test_entry_point_plugins_are_listed(monkeypatch):

    class EP:
        name, value = "my-method", "mypkg.mod:MyMethod"

    r = Registry("methods")
    monkeypatch.setattr("unifybench.registry.entry_points",
                        lambda group: [EP()] if group == "unifybench.methods" else [])
    assert "my-method" in r.names()


def test_a_plugins_description_is_its_docstrings_first_line(monkeypatch, tmp_path, capsys):
    # A third-party package, importable but never imported until listed.
    pkg = tmp_path / "fakeplugin_i13"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(
        'from unifybench.methods.base import Method\n\n\n'
        'class MyMethod(Method):\n'
        '    """  My method: soft prompts on a toy model.\n\n    More text that ls does not print.\n    """\n')
    monkeypatch.syspath_prepend(str(tmp_path))

    class EP:
        name, value = "my-method", "fakeplugin_i13.mod:MyMethod"

    import sys

    from unifybench import registry
    fresh = registry.Registry("methods")
    for e in registry.METHODS.entries():
        fresh.register(e.name, e.target, e.description)
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP()] if group == "unifybench.methods" else [])
    monkeypatch.setitem(registry.REGISTRIES, "methods", fresh)
    assert "fakeplugin_i13.mod" not in sys.modules
    assert fresh.entry("my-method").description == ""          # nothing imported at registration
    from unifybench.cli import main
    assert main(["ls", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "my-method\tMy method: soft prompts on a toy model." in lines
    # Built-ins keep their registered line.
    assert f"yochameleon\t{registry.METHODS.entry('yochameleon').description}" in lines


def test_a_plugin_that_cannot_be_imported_is_listed_with_the_reason(monkeypatch):
    from unifybench import registry

    class EP:
        name, value = "broken", "no_such_module_i13:Thing"

    r = registry.Registry("methods")
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP()])
    assert r.description("broken").startswith("(cannot import no_such_module_i13:Thing: ModuleNotFoundError")


def test_unknown_evaluator_and_bad_settings_exit_2(tmp_path):
    out = run_cli("run", "--method", "random", "--evaluators", "recogniton", "--output-dir", str(tmp_path))
    assert out.returncode == 2 and "did you mean 'recognition'" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("run", "--method", "yochameleon", "--set", "epochs=many", "--output-dir", str(tmp_path))
    assert out.returncode == 2 and "epochs" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("run", "--method", "yochameleon", "--set", "no_such_setting=1", "--output-dir", str(tmp_path))
    assert out.returncode == 2 and "no_such_setting" in out.stderr


def test_random_baseline_runs_end_to_end(tmp_path):
    import json
    out = run_cli("run", "--method", "random", "--output-dir", str(tmp_path), "--no-progress",
                  "--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "results.json").read_text())["results"]["unifybench-mini"]["recognition"]
    # A coin flip: weighted recall near 0.5, every reply parsed.
    assert res["n"] == 64 and res["n_failed"] == 0 and res["n_unparsed"] == 0
    assert 0.2 <= res["value"] <= 0.8
