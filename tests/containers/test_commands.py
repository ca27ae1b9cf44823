"""Pure command lines and input validation: no runtime needed."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from nonsense_hpc.containers import (
    Bind,
    LocalRuntime,
    SandboxRecipe,
    detect_runtime,
    get_runtime,
    host_python_binds,
    mpi_binds,
    passthrough_environment,
)
from nonsense_hpc.containers import commands as c
from nonsense_hpc.containers.bwrap import bwrap_command, order_binds
from nonsense_hpc.containers.sandbox import debootstrap_command, resolve_sandbox
from nonsense_hpc.errors import ConfigError, ContainerError


def test_apptainer_command_lines_golden():
    assert c.exec_command("/i/job.sif", ["python", "-V"], binds=["/scratch", "/a:/b:ro"],
                          nv=True, options=["--env", "A=1"]) == [
        "singularity", "--quiet", "exec", "--nv", "--bind", "/scratch", "--bind", "/a:/b:ro",
        "--env", "A=1", "/i/job.sif", "python", "-V"]
    assert c.run_command("job.sif", ["x.py"]) == ["singularity", "--quiet", "run", "job.sif",
                                                  "x.py"]
    assert c.shell_command("job.sif", binds=["/d"]) == [
        "singularity", "--quiet", "shell", "--bind", "/d", "job.sif"]
    assert c.build_command("out.sif", "c.def", force=True,
                           options=c.build_options(True, {"OPENMPI_VERSION": "5.0.11"})) == [
        "singularity", "--quiet", "build", "--force", "--fakeroot", "--build-arg",
        "OPENMPI_VERSION=5.0.11", "out.sif", "c.def"]
    assert c.instance_start_command("job.sif", "fwd", ["python", "-m", "svc"],
                                    options=["--bind", "/d"]) == [
        "singularity", "--quiet", "instance", "start", "--bind", "/d", "job.sif", "fwd",
        "python", "-m", "svc"]
    assert c.instance_stop_command("fwd", 5) == ["singularity", "--quiet", "instance", "stop",
                                                 "-t", "5", "fwd"]
    assert c.instance_list_command() == ["singularity", "--quiet", "instance", "list", "--json"]


def test_env_options_and_bad_names():
    assert c.env_options({"A": "1"}, clean_env=True, pwd="/w") == [
        "--cleanenv", "--env", "A=1", "--pwd", "/w"]
    with pytest.raises(ConfigError, match="bad environment variable"):
        c.env_options({"A=B": "1"})
    with pytest.raises(ConfigError, match="no command"):
        c.exec_command("job.sif", [])


def test_bind_parse():
    assert Bind.parse("/a") == Bind("/a", "/a", False)
    assert Bind.parse("/a:/b:ro") == Bind("/a", "/b", True)
    assert Bind.parse("/a:/b:ro").spec() == "/a:/b:ro"
    assert Bind.parse("/a:/b").spec() == "/a:/b"
    for bad, msg in (("/a:/b:rx", "mode"), ("", "SRC"), ("/a:rel", "absolute"),
                     ("/a:/b:ro:x", "SRC")):
        with pytest.raises(ConfigError, match=msg):
            Bind.parse(bad)


def test_order_binds_later_wins_and_parents_first():
    out = order_binds([Bind("/w/main", "/w/main", True), Bind("/w/main/.venv", "/w/main/.venv"),
                       Bind("/tmp", "/tmp"), Bind("/x", "/w/main")])
    assert [b.dst for b in out] == ["/tmp", "/w/main", "/w/main/.venv"]
    assert out[1] == Bind("/x", "/w/main", False)


def test_bwrap_command_shape(tmp_path):
    home, proj = tmp_path / "home", tmp_path / "home" / "proj"
    proj.mkdir(parents=True)
    env = {"HOME": str(home), "PMIX_SERVER_TMPDIR": "/", "PATH": "/bin", "OMPI_X": "1",
           "SECRET": "s"}
    cmd = bwrap_command("/r", ["python", "-V"], binds=[Bind("/data", "/data", True)],
                        base_binds=[Bind(str(proj), str(proj), True)],
                        env={"A": "1"}, clean_env=True, environ=env, cwd=str(proj),
                        host_files=(), executable="bwrap")
    text = " ".join(cmd)
    assert cmd[:4] == ["bwrap", "--bind", "/r", "/"]
    assert cmd[-3:] == ["--", "python", "-V"]
    # the working directory stays writable though the source tree was bound read-only
    assert f"--bind {proj} {proj}" in text
    assert f"--ro-bind {proj}" not in text
    assert "--ro-bind /data /data" in text
    # parents before children, root remounted read-only after every bind
    assert text.index(f"--bind {home} {home}") < text.index(f"--bind {proj}")
    assert text.index("--ro-bind /data") < text.index("--remount-ro /")
    assert "--clearenv" in cmd and "--setenv OMPI_X 1" in text and "SECRET" not in text
    assert "--setenv A 1" in text and f"--chdir {proj}" in text
    assert "--unshare-pid" not in cmd  # ranks share the host's PID namespace
    assert "--die-with-parent" in cmd  # and die with their launcher
    # a home or working directory that does not exist is not bound
    gone = bwrap_command("/r", ["x"], environ={"HOME": "/nonexistent"}, cwd="/nonexistent2",
                         host_files=())
    assert "--bind /nonexistent" not in " ".join(gone)
    inst = bwrap_command("/r", ["svc"], environ={}, home="", cwd="/", host_files=(),
                         instance=True)
    assert "--unshare-pid" in inst and "--die-with-parent" not in inst
    with pytest.raises(ConfigError, match="no command"):
        bwrap_command("/r", [], environ={})
    with pytest.raises(ConfigError, match="absolute"):
        bwrap_command("rel", ["x"], environ={})


def test_passthrough_environment_keeps_what_ranks_need():
    env = {"OMPI_COMM_WORLD_RANK": "1", "PMIX_RANK": "1", "SLURM_PROCID": "0",
           "NONSENSE_TIMEOUT": "5", "MASTER_ADDR": "h", "PATH": "/bin", "AWS_SECRET": "x"}
    out = passthrough_environment(env)
    assert "AWS_SECRET" not in out and len(out) == len(env) - 1


def test_mpi_binds(tmp_path):
    session = tmp_path / "ompi.123"
    session.mkdir()
    env = {"PMIX_SERVER_TMPDIR": str(session), "PMIX_SYSTEM_TMPDIR": "/tmp",
           "OMPI_FILE_LOCATION": str(tmp_path / "gone")}
    assert mpi_binds(env, already=()) == [Bind(str(session), str(session)), Bind("/tmp", "/tmp")]
    assert mpi_binds(env, already=("/tmp",)) == []


def test_host_python_binds_skip_system_dirs(tmp_path):
    venv, proj = tmp_path / "venv", tmp_path / "proj"
    out = host_python_binds(str(venv), "/usr", str(proj))
    assert out == [Bind(str(venv), str(venv), True), Bind(str(proj), str(proj), True)]
    assert host_python_binds(str(venv), "/usr", str(venv)) == [Bind(str(venv), str(venv), True)]
    assert all(b.readonly for b in host_python_binds())
    assert any(b.src == os.path.realpath(sys.prefix) for b in host_python_binds())


def test_sandbox_recipe_validation(tmp_path):
    r = SandboxRecipe()
    assert debootstrap_command(r, "/t") == [
        "debootstrap", "--variant=minbase", "--include=python3", "bookworm", "/t",
        "http://deb.debian.org/debian"]
    for bad in ({"suite": "Book worm"}, {"mirror": "ftp://x"}, {"variant": "tiny"},
                {"include": ["Bad Pkg"]}):
        with pytest.raises(ConfigError):
            SandboxRecipe.from_mapping(bad)
    with pytest.raises(ConfigError, match="valid keys: suite"):
        SandboxRecipe.from_mapping({"suit": "bookworm"})
    f = tmp_path / "r.yaml"
    f.write_text("include: [python3, htop]\n")
    assert SandboxRecipe.load(f).include == ("python3", "htop")
    assert SandboxRecipe.load(f).digest() != r.digest()
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        SandboxRecipe.load(f)
    with pytest.raises(ConfigError, match="cannot read"):
        SandboxRecipe.load(tmp_path / "missing.yaml")


def test_resolve_sandbox_names(tmp_path):
    env = {"NONSENSE_SANDBOX_DIR": str(tmp_path)}
    assert resolve_sandbox("job", env) == tmp_path / "job"
    assert resolve_sandbox("./x", env) == (tmp_path.cwd() / "x").absolute()
    with pytest.raises(ConfigError, match="URI"):
        resolve_sandbox("docker://python:3.11", env)
    with pytest.raises(ConfigError, match="bad image name"):
        resolve_sandbox("a b", env)


def test_missing_image_is_a_clear_error(tmp_path):
    rt = LocalRuntime(environ={**os.environ, "NONSENSE_SANDBOX_DIR": str(tmp_path)})
    with pytest.raises(ContainerError, match=r"image 'nope' not found.*container build"):
        rt.exec_command("nope", ["true"])
    (tmp_path / "half").mkdir()
    with pytest.raises(ContainerError, match="not a finished sandbox"):
        rt.exec_command("half", ["true"])
    (tmp_path / "x.sif").write_text("")
    with pytest.raises(ContainerError, match="SIF images need Apptainer"):
        rt.exec_command(str(tmp_path / "x.sif"), ["true"])
    with pytest.raises(ConfigError, match="Apptainer definition"):
        rt.build("x", "containers/nonsense-hpc.def")
    with pytest.raises(ConfigError, match="valid: include, timeout"):
        rt.build("x", bogus=1)


def _fake_tool(bindir, name):
    exe = bindir / name
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_detect_runtime_order(tmp_path):
    # Empty directories on PATH: what is found is decided by which names exist there.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {"PATH": str(bindir)}
    with pytest.raises(ContainerError, match="apt-get install -y debootstrap bubblewrap"):
        detect_runtime(env)
    _fake_tool(bindir, "bwrap")
    assert detect_runtime(env) == "local"
    _fake_tool(bindir, "singularity")
    assert detect_runtime(env) == "singularity"
    _fake_tool(bindir, "apptainer")
    assert detect_runtime(env) == "apptainer"
    assert detect_runtime({**env, "NONSENSE_CONTAINER_RUNTIME": "LOCAL"}) == "local"
    assert detect_runtime({**env, "NONSENSE_CONTAINER_RUNTIME": "auto"}) == "apptainer"
    with pytest.raises(ConfigError, match="valid runtimes: apptainer, singularity, local"):
        detect_runtime({**env, "NONSENSE_CONTAINER_RUNTIME": "docker"})
    with pytest.raises(ConfigError, match="valid runtimes"):
        get_runtime("podman")
    assert get_runtime("singularity").name == "singularity"
