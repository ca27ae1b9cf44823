"""A stand-in for the `singularity` command, for machines without Apptainer.

Apptainer and SingularityCE cannot be installed here, so the spython-driven path is checked
through the command lines it runs: this script records its argv (one JSON line per call in
$FAKE_SINGULARITY_LOG) and answers the few queries spython parses (--version, instance list
--json). It runs nothing. Tests that need a real Apptainer are skipped instead.
"""

import json
import os
import sys
from pathlib import Path

argv = sys.argv[1:]
log = Path(os.environ["FAKE_SINGULARITY_LOG"])
state = log.with_suffix(".instances.json")
with log.open("a") as f:
    f.write(json.dumps(argv) + "\n")
words = [a for a in argv if a not in ("--quiet", "--debug")]
instances = json.loads(state.read_text()) if state.exists() else []
if words[:1] == ["--version"]:
    print("apptainer version 1.3.4")
elif words[:1] == ["build"]:
    if "broken" in words[-1]:
        sys.exit("FATAL: While performing build: %post script failed")
    Path(words[-2]).write_text("fake sif\n")
elif words[:2] == ["instance", "start"]:
    rest, positional = words[2:], []
    while rest:
        word = rest.pop(0)
        if positional or not word.startswith("-"):
            positional.append(word)
        elif word in ("--bind", "-B", "--env"):
            rest.pop(0)
    image, name = positional[0], positional[1]
    instances.append({"instance": name, "pid": os.getpid(), "img": image,
                      "logOutPath": "", "logErrPath": ""})
    state.write_text(json.dumps(instances))
elif words[:2] == ["instance", "list"]:
    print(json.dumps({"instances": instances}))
elif words[:2] == ["instance", "stop"]:
    state.write_text(json.dumps([i for i in instances if i["instance"] != words[-1]]))
elif words[:1] in (["exec"], ["run"]):
    print("fake output")
